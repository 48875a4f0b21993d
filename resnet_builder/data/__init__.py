"""The data room: every source (digits, CIFAR, folders, .npz, synthetic) becomes a DataBundle.

A bundle holds the prepared training and validation splits (uint8, ``image_size``
square, ``channels`` deep) and hands out ``tf.data`` pipelines: one for a run's epochs
(``train_batches``), one epoch (``train_dataset``), validation (``val_dataset``). Images stay
on the raw 0..255 scale: the model carries a Normalization layer built from
``mean``/``std`` (train split only, before augmentation), so a saved model
preprocesses itself.

Reproducibility: the epoch order is a full permutation drawn from ``(seed, epoch)``
(indices are shuffled, not images, so no shuffle buffer is needed) and every
augmentation is a stateless op seeded from ``(seed, epoch, batch number)``, so epoch k
yields the same batches whether or not training was resumed.

Memory: prepared images are kept in memory when ``data.cache`` is on and both splits
fit in ``CACHE_BUDGET_BYTES``; otherwise each image is resized (arrays) or decoded
(files) on demand in a parallel ``tf.data`` map. Folders stream: files are listed, not
decoded, before training; a file that fails to decode gives label -1 and is named by
``DataBundle.take_skipped``. ``train_batches(epochs, ..., shard, num_shards, first_batch)``
reads one worker's rows of each global batch, from any batch on.

Modules: ``loading`` (``load_data``), ``bundle`` (``DataBundle``, seeded streams),
``augment``, ``splits`` (validation split, ``data.limit``, mean/std), ``sources`` (what
the sources share), one module per source (``digits``, ``cifar``, ``npz``,
``synthetic``, ``folder``), ``images`` (reading one image file with Pillow), ``decode``
(encoded images -> pixels in tf.data, failure-safe), ``stream`` (streamed files, the
decoded-image store) and ``folders`` (the class-folder scanner). This room imports
config, model and the top-level helpers, never training, inference, benchmark or the CLI.
"""

from resnet_builder.data.bundle import CACHE_BUDGET_BYTES, DataBundle
from resnet_builder.data.folder import SkippedFilesWarning
from resnet_builder.data.loading import load_data

__all__ = ["CACHE_BUDGET_BYTES", "DataBundle", "SkippedFilesWarning", "load_data"]
