"""Packed TFRecords against the streamed folder they were packed from, in one run.

    python bench/pipeline_records.py [--files 1000] [--size 224] [--batch 64] [--rounds 3]

Makes photo-size JPEGs (500x375, quality 90), packs them (``resnet-builder pack``, bytes as
they are, 8 shards, no validation split), then times alternating passes of 3 epochs of each
training pipeline (``train_batches``: decoding, the flip, batching) and prints the median
images/s and the median CPU time per image (process time over both cores):

  * folder: ``data.source: folder``, ``data.cache: false`` (streamed);
  * records: ``data.source: tfrecord`` on the pack (every record a JPEG, so decoded on the
    JPEG-only route);
  * records, format check: the same with that route off, as for a pack holding other
    formats (or one made before pack counted formats).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import photo_pipeline_args

EPOCHS = 3


def pipelines(photos: Path, packed: Path, size: int, batch: int
              ) -> dict[str, Callable[[], tuple[float, float]]]:
    """name -> a function timing one pass: (images/s, CPU us per image)."""
    import dataclasses

    from resnet_builder.config import AugmentConfig, DataConfig
    from resnet_builder.data import load_data

    flip = AugmentConfig(random_crop_padding=0, horizontal_flip=True)
    folder = load_data(DataConfig(source="folder", path=str(photos), image_size=size,
                                  validation_split=0.0, cache=False), flip, seed=0)
    records = load_data(DataConfig(source="tfrecord", path=str(packed), image_size=size),
                        flip, seed=0)
    assert records.jpeg_only, "the pack should hold JPEGs only"
    checked = dataclasses.replace(records, jpeg_only=False)

    def timed(bundle) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            cpu, start, count = time.process_time(), time.perf_counter(), 0
            for _, labels in bundle.train_batches(range(EPOCHS), batch):
                count += len(labels)
            return count / (time.perf_counter() - start), (time.process_time() - cpu) / count * 1e6
        return run

    return {"folder (streamed)": timed(folder), "records": timed(records),
            "records, format check": timed(checked)}


def main() -> None:
    args = photo_pipeline_args()

    from resnet_builder.benchmark.pipelines import make_jpegs
    from resnet_builder.data.pack import pack_folder

    work = Path(tempfile.mkdtemp(prefix="pipeline_records_"))
    make_jpegs(work / "photos", args.files)
    pack_folder(work / "photos", str(work / "packed"), shards=8, validation_split=0.0)
    timers = pipelines(work / "photos", work / "packed", args.size, args.batch)
    for run in timers.values():  # warm-up: graphs, file cache
        run()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in timers}
    for _ in range(args.rounds):
        for name, run in timers.items():
            results[name].append(run())
    print(f"{args.files} JPEGs 500x375 -> {args.size}, batch {args.batch}, flip, passes of "
          f"{EPOCHS} epochs; median over {args.rounds} alternating passes:")
    folder_rate = np.median([r for r, _ in results["folder (streamed)"]])
    for name, values in results.items():
        rate, cpu = np.median([r for r, _ in values]), np.median([c for _, c in values])
        print(f"  {name:24s} {rate:7.0f} images/s ({rate / folder_rate:.2f}x the folder), "
              f"{cpu:6.0f} us CPU/image   {[round(r) for r, _ in values]}")


if __name__ == "__main__":
    main()
