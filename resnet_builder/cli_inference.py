"""The ``predict``, ``evaluate`` and ``export`` commands: using a trained model.

Thin skins over ``resnet_builder.inference``; ``cli.py`` adds them to the
``resnet-builder`` group, whose error handling applies to them too.
"""

from __future__ import annotations

import json
import os

import click

from resnet_builder.errors import UserError
from resnet_builder.runs import DEFAULT_PROJECTS, TRAIN_PROJECT
from resnet_builder.runtime import starts_tensorflow

TTA_HELP = ("Test-time augmentation: average the probabilities of each image and its "
            "horizontal flip.")
THRESHOLD_HELP = ("Multilabel models: a label counts as present from this probability on "
                  "(default: the one stored in the model, predict.threshold at training).")


def _run_options(default_project: str):
    """--project/--name/--exist-ok, as for train: results go to PROJECT/NAME (exp, exp2, ...)."""
    def decorate(f):
        f = click.option("--exist-ok", is_flag=True,
                         help="Reuse PROJECT/NAME instead of numbering a new folder.")(f)
        f = click.option("--name", default="exp", show_default=True, callback=plain_folder_name,
                         help="Output folder name (one folder, under --project); exp2, exp3, "
                              "... when taken.")(f)
        f = click.option("--project", default=default_project, show_default=True,
                         help="Parent folder of output folders.")(f)
        return f
    return decorate


def plain_folder_name(ctx: click.Context, param: click.Parameter, name: str | None
                      ) -> str | None:
    """A ``--name`` checked before any model or data loads: '.' or '..' put the output (and
    what --exist-ok clears) in the project folder or above it."""
    from resnet_builder.runs import is_folder_name

    if name is not None and not is_folder_name(name):
        raise click.BadParameter(f"{name!r} is not a folder name: give a plain name such as "
                                 "exp; put the folders above it in --project")
    return name


def show_skipped(rows, shown: int = 50) -> None:
    """Name the first ``shown`` left-out files (``(path, reason)`` pairs) on stderr."""
    from resnet_builder.runs import skipped_lines

    for line in skipped_lines([tuple(row) for row in rows], shown, word="skipped ",
                              rest=" (see skipped.csv)"):
        click.echo(line, err=True)


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--model", "-m", "model_source", type=click.Path(exists=True),
              help="A .keras file, a run folder (its best.keras) or an export (model.tflite, "
                   "model.onnx, saved_model/ with its export.json). "
                   f"Default: the newest run under {TRAIN_PROJECT}.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Top classes per image in the output (capped at the number of classes).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True, help="predictions.csv or predictions.json.")
@click.option("--grid", is_flag=True, help="Also draw grid.png: the images with their labels.")
@click.option("--grid-max", type=click.IntRange(min=1), default=100, show_default=True,
              help="At most this many images on grid.png (the first ones).")
@click.option("--cam", is_flag=True,
              help="Also write Grad-CAM heatmaps over each image to cam/ (same sub-folders).")
@click.option("--tta", is_flag=True, help=TTA_HELP)
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help=THRESHOLD_HELP)
@_run_options(DEFAULT_PROJECTS["predict"])
@starts_tensorflow
def predict(sources, model_source, top_k, batch_size, fmt, grid, grid_max, cam, tta, threshold,
            project, name, exist_ok) -> None:
    """Predict classes of images: SOURCES are image files, folders (recursive) or globs.

    Writes PROJECT/NAME/predictions.csv (path, label, probability, then the top-k
    labels and probabilities; a multilabel model's labels at or above the threshold
    and their probabilities after path, as a;b) and skipped.csv (files that could not be read, with
    the reason). Unreadable files never stop the run; the exit code is non-zero
    only when nothing could be predicted.
    """
    from resnet_builder.inference.predict import predict_to_folder

    def said(im) -> None:
        note = "" if model_source else f" (newest run under {TRAIN_PROJECT})"
        kind = "" if im.kind == "keras" else f" ({im.kind} export)"
        click.echo(f"model: {im.source}{kind}{note}, input {im.image_size}x{im.image_size}x"
                   f"{im.channels}, {im.num_classes} classes")

    report = predict_to_folder(sources, model_source, top_k=top_k, batch_size=batch_size,
                               fmt=fmt, grid=grid, grid_max=grid_max, cam=cam, tta=tta,
                               project=project, name=name, exist_ok=exist_ok, on_model=said,
                               threshold=threshold)
    for p in report.shown:
        if p.labels is not None:  # multilabel: every label at or above the threshold
            click.echo(f"{p.path}: " + (", ".join(f"{lab} {prob:.3f}" for lab, prob in p.labels)
                                        or "(no label)"))
            continue
        click.echo(f"{p.path}: {p.label} {p.probability:.3f}")
    if report.predicted > len(report.shown):
        click.echo(f"... {report.predicted - len(report.shown)} more in {report.output.name}")
    show_skipped((s.path, s.reason) for s in report.skipped)
    for missing in report.cam_missing:
        click.echo(f"note: {missing.path}: {missing.reason}")
    click.echo(f"predicted {report.predicted} image(s), skipped {len(report.skipped)}, "
               f"{report.images_per_second:.1f} images/s{' (with Grad-CAM)' if cam else ''}"
               f"{' (with TTA: image and its horizontal flip)' if tta else ''}")
    if report.replaced:
        click.echo(f"--exist-ok: removed the earlier predict's {', '.join(report.replaced)}")
    wrote = [report.output.name, "skipped.csv"]
    if report.grid:
        wrote.append(report.grid.name)
    if report.cam_folder:
        wrote.append("cam/")
    click.echo(f"wrote {report.folder}: {', '.join(wrote)}")


@click.command()
@click.argument("run_dir", required=False, type=click.Path(exists=True))
@click.option("--model", "-m", "model_source", type=click.Path(exists=True),
              help="A .keras file, run folder or export (model.tflite, model.onnx, "
                   "saved_model/ with its export.json) (default: RUN_DIR's best.keras, else "
                   f"the newest run under {TRAIN_PROJECT}).")
@click.option("--data", "data_dir", type=click.Path(exists=True),
              help="A folder of class folders, or a CSV of image paths and labels (as "
                   "data.source csv reads); classes are matched to the model's by name.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Evaluate on this config's validation split.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="k of the top-k accuracy (capped at the number of classes).")
@click.option("--tta", is_flag=True,
              help=TTA_HELP + " Prints the accuracy with and without it.")
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Write here instead of PROJECT/NAME.")
@_run_options(DEFAULT_PROJECTS["evaluate"])
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of the table.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help=THRESHOLD_HELP)
@starts_tensorflow
def evaluate(run_dir, model_source, data_dir, config_path, batch_size, top_k, tta, output,
             project, name, exist_ok, as_json, threshold) -> None:
    """Accuracy, top-k accuracy, per-class precision/recall/F1 and a confusion matrix.

    On RUN_DIR's validation split (its config.yaml data and best.keras; a .keras file
    there is taken as --model), on --data
    FOLDER (FOLDER/<class>/images) or on --config CONFIG.yaml's validation split.
    Writes metrics.json and confusion_matrix.png to PROJECT/NAME or --output.
    """
    from resnet_builder.inference.evaluate import evaluate_to_folder, format_metrics

    if run_dir is not None and os.path.isfile(run_dir):  # a model file given where a run goes
        if model_source is not None:
            raise click.BadParameter(f"{run_dir} is a file; give a run folder here, or the "
                                     "model only with --model", param_hint="RUN_DIR")
        run_dir, model_source = None, run_dir
    result = evaluate_to_folder(model_source, run=run_dir, data=data_dir, config=config_path,
                                batch_size=batch_size, top_k=top_k, tta=tta, output=output,
                                project=project, name=name, exist_ok=exist_ok,
                                threshold=threshold)
    if as_json:
        click.echo(json.dumps(result.metrics))
        return
    click.echo(f"model: {result.model}")
    click.echo(f"data: {result.data}")
    show_skipped((s.path, s.reason) for s in result.skipped)
    click.echo(format_metrics(result.metrics))
    click.echo(f"wrote {result.folder}: {', '.join(result.files)} "
               f"({result.metrics['images_per_second']} images/s)")


@click.command("export")
@click.argument("model_source", required=False, type=click.Path(exists=True))
@click.option("--format", "-f", "formats", multiple=True, default=("savedmodel",),
              show_default=True,
              type=click.Choice(["savedmodel", "tflite", "tflite-int8", "onnx", "all"]),
              help="Export format (repeatable); all = every format whose packages are "
                   "installed.")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False),
              help="Folder of images for int8 calibration and the checks (default: the run's "
                   "data from its config.yaml).")
@click.option("--samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="Images used to calibrate and to check each export.")
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Write here instead of PROJECT/NAME.")
@_run_options(DEFAULT_PROJECTS["export"])
@starts_tensorflow
def export_command(model_source, formats, calibration, samples, output, project, name,
                   exist_ok) -> None:
    """Export MODEL (a .keras file or run folder; default: the newest run) and check it.

    Every export takes raw 0..255 pixels (normalisation is inside) and is compared
    with the Keras model on sample images; one whose top-1 agreement is under 99%
    (95% for tflite-int8) fails the command. Writes the files, labels.txt and
    export.json to PROJECT/NAME or --output.
    """
    from resnet_builder.inference.export import describe_result, export

    if model_source is None:
        from resnet_builder.runs import latest_run

        model_source = str(latest_run())
        click.echo(f"model: {model_source} (newest run under {TRAIN_PROJECT})")
    report = export(model_source, formats, calibration=calibration, samples=samples,
                    output=output, project=project, name=name, exist_ok=exist_ok,
                    on_done=lambda fmt, r: click.echo(describe_result(fmt, r)))
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo(f"checked on {report.samples.check_source}")
    click.echo(f"wrote {report.folder}: {', '.join(r['path'] for r in report.results.values())}"
               ", labels.txt, export.json")
    if report.failed:
        raise UserError(f"export failed for {', '.join(report.failed)} (see "
                        f"{report.folder / 'export.json'})",
                        hint="a failed check means the export does not compute what the Keras "
                             "model does; RESNET_BUILDER_DEBUG=1 shows converter errors in full")
