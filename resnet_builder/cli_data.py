"""The ``pack`` command: a class folder -> sharded TFRecords for ``data.source: tfrecord``.

A thin skin over ``resnet_builder.data.pack``; ``cli.py`` adds it to the
``resnet-builder`` group, whose error handling applies to it too.
"""

from __future__ import annotations

import click

from resnet_builder.cli_errors import path_hint
from resnet_builder.config import key_specs
from resnet_builder.runtime import starts_tensorflow

_SPLIT = key_specs()["data"]["validation_split"]  # the config owns the range and default


@click.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("out")
@click.option("--shards", type=click.IntRange(min=1), default=16, show_default=True,
              help="Training shard files (validation gets a proportional number). Use at "
                   "least 10 per training worker; ImageNet: 1024.")
@click.option("--image-size", type=click.IntRange(min=8),
              help="Re-encode as JPEG (quality 95) with the shorter side at most this many "
                   "pixels, to make photo-size data smaller (default: store files as they are).")
@click.option("--validation-split", type=click.FloatRange(_SPLIT.min, _SPLIT.max),
              default=_SPLIT.default, show_default=True,
              help="Share held out for validation when FOLDER has no val/ (stratified).")
@click.option("--seed", type=click.IntRange(min=0, max=2**31 - 1), default=0, show_default=True,
              help="Seeds the validation split, the record order and the mean/std sample.")
@click.option("--overwrite", is_flag=True,
              help="Pack into a folder that holds an earlier pack (its files are replaced).")
@starts_tensorflow
def pack(folder, out, shards, image_size, validation_split, seed, overwrite) -> None:
    """Pack FOLDER (FOLDER/<class>/images, or train/ + val/) into TFRecord shards in OUT.

    OUT (a folder, or a tf.io.gfile URL such as gs://bucket/data) gets
    train-*.tfrecord and val-*.tfrecord shards, skipped.csv (files that could not
    be read) and dataset.json (classes, counts, mean/std). Train from it with
    data.source: tfrecord and data.path: OUT.
    """
    from resnet_builder.cli_inference import show_skipped
    from resnet_builder.data.pack import OutputRefused, check_paths, pack_folder
    from resnet_builder.data.pack_format import DATASET_FILE, SKIPPED_FILE

    def wrote(name: str, count: int) -> None:
        what = {SKIPPED_FILE: f"{count} file(s) left out", DATASET_FILE: "classes, counts, "
                "mean/std"}.get(name, f"{count} image(s)")
        click.echo(f"  {name}: {what}")

    check_paths(folder, out)  # a missing FOLDER or OUT inside it: say so before "packing"
    click.echo(f"packing {folder} into {out}")
    try:
        report = pack_folder(folder, out, shards=shards, image_size=image_size,
                             validation_split=validation_split, seed=seed,
                             overwrite=overwrite, on_file=wrote)
    except OutputRefused as exc:  # the hint every refused path gets, by the reason
        exc.hint = path_hint(exc.errno, argument="OUT")
        raise
    show_skipped(report.skipped)
    train_shards = sum(name.startswith("train-") for name in report.files)
    if train_shards < shards:  # a shard holds at least one image
        click.echo(f"note: --shards {shards} is more than the {train_shards} training "
                   f"files: {train_shards} train shards written, one file each")
    counts = ", ".join(f"{n} {split}" for split, n in report.counts.items())
    click.echo(f"wrote {report.out}: {len(report.files)} files ({counts} images, "
               f"{len(report.class_names)} classes, {len(report.skipped)} skipped) in "
               f"{report.seconds:.1f} s, {report.images_per_second:.1f} images/s")
