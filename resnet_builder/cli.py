"""The ``resnet-builder`` command: parse, call the Python API, print, exit.

No logic lives here. User errors (``UserError``, and ``ValueError`` from the
model's argument checks) become one message and a non-zero exit code, never
a traceback (set ``RESNET_BUILDER_DEBUG=1`` to see one). TensorFlow is
imported only inside the commands that need it.
"""

from __future__ import annotations

import json
import os
import time

import click

from resnet_builder.errors import UserError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ chatter off the terminal


class CommandFailed(click.ClickException):
    """A ClickException that carries the exit code the error asked for."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Group(click.Group):
    """Turns user errors raised anywhere below a command into clean exits."""

    def invoke(self, ctx: click.Context):
        if ctx.protected_args and ctx.protected_args[0] in NEEDS_TENSORFLOW:
            from resnet_builder.runtime import import_tensorflow_quietly

            import_tensorflow_quietly()
        try:
            return super().invoke(ctx)
        except UserError as exc:
            if os.environ.get("RESNET_BUILDER_DEBUG"):
                raise
            raise CommandFailed(str(exc), exc.exit_code) from None
        except ValueError as exc:
            if os.environ.get("RESNET_BUILDER_DEBUG"):
                raise
            raise CommandFailed(str(exc), 2) from None


# Commands that always load TensorFlow; it is started (quietly) before they run.
NEEDS_TENSORFLOW = {"train", "predict", "evaluate", "export", "bench"}


def int_list(value: str | None, name: str) -> list[int] | None:
    """``3,4,6,3`` -> [3, 4, 6, 3]; a clear usage error otherwise."""
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"expected integers separated by commas, got {value!r}",
                                 param_hint=name) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="resnet-builder")
def main() -> None:
    """Build, train and run pre-activation ResNets (ResNetV2) of any depth."""


# --------------------------------------------------------------------------- build

MODEL_OPTIONS = [
    click.option("--depth", help="Depth: 9n+2 (bottleneck) or 6n+2 (basic), CIFAR-style network."),
    click.option("--preset", help="A named preset (see `resnet-builder presets`)."),
    click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
                 help="A YAML config; its model section (and data.image_size/channels) is used."),
    click.option("--blocks", help="Explicit blocks per stage, e.g. 3,4,6,3."),
    click.option("--filters", help="Explicit filters per stage, e.g. 64,128,256,512."),
    click.option("--strides", help="Explicit strides per stage, e.g. 1,2,2,2."),
    click.option("--dilations", help="Dilation per stage, e.g. 1,1,2,4 (default: none)."),
    click.option("--block-type",
                 type=click.Choice(["basic", "bottleneck", "basic_block", "block"]),
                 help="Block type; default: bottleneck when the depth fits 9n+2, else basic."),
    click.option("--stem-filters", type=click.IntRange(min=1),
                 help="Stem width (depth networks: base width w of stages w/2w/4w; default 16)."),
    click.option("--num-classes", type=click.IntRange(min=1), help="Classes (default 10)."),
    click.option("--input-shape",
                 help="H,W,C (default 32,32,3 for depth networks, else 224,224,3)."),
    click.option("--head", type=click.Choice(["gap", "tutorial"]), help="Classifier head."),
    click.option("--dropout", type=click.FloatRange(0.0, 0.99, max_open=True), help="Dropout."),
]
WAYS = ("depth", "preset", "stackwise_blocks", "stackwise_filters", "stackwise_strides")


def model_options(command):
    """The options that say which network to build, shared by ``build`` and ``bench``."""
    for option in reversed(MODEL_OPTIONS):
        command = option(command)
    return command


def architecture_from_options(opts: dict) -> tuple:
    """(Architecture, {num_classes, head, dropout}) from the shared model options."""
    from resnet_builder.model.architecture import resolve_architecture

    request = _model_request(opts["config_path"])
    given = {"depth": opts["depth"], "preset": opts["preset"], "block_type": opts["block_type"],
             "stackwise_blocks": int_list(opts["blocks"], "--blocks"),
             "stackwise_filters": int_list(opts["filters"], "--filters"),
             "stackwise_strides": int_list(opts["strides"], "--strides"),
             "stackwise_dilations": int_list(opts["dilations"], "--dilations"),
             "stem_filters": opts["stem_filters"], "num_classes": opts["num_classes"],
             "head": opts["head"], "dropout": opts["dropout"],
             "input_shape": int_list(opts["input_shape"], "--input-shape")}
    if any(given[k] is not None for k in WAYS):  # a way given on the command line wins
        for key in WAYS:
            request.pop(key, None)
    request.update({k: v for k, v in given.items() if v is not None})
    if request.get("input_shape") is not None and len(request["input_shape"]) != 3:
        raise click.BadParameter("expected H,W,C", param_hint="--input-shape")
    model_args = {"num_classes": request.pop("num_classes", 10),
                  "head": request.pop("head", "gap"), "dropout": request.pop("dropout", 0.0)}
    return resolve_architecture(**request), model_args


@main.command()
@model_options
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write the model to this .keras file.")
@click.option("--plot", type=click.Path(dir_okay=False, writable=True),
              help="Draw the architecture to this .png (needs pydot and graphviz).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def build(output, plot, as_json, **opts) -> None:
    """Build a ResNetV2 classifier and summarise it (optionally save and plot it)."""
    from resnet_builder.model.summary import model_summary

    start = time.perf_counter()
    arch, model_args = architecture_from_options(opts)
    summary = model_summary(arch, model_args["num_classes"], model_args["head"])
    summary["plan_seconds"] = round(time.perf_counter() - start, 4)
    if output or plot:
        from resnet_builder.model.saving import save_model_file

        summary.update(save_model_file(arch, output=output, plot=plot, **model_args))
    summary["build_seconds"] = round(time.perf_counter() - start, 3)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(format_summary(summary))


def _model_request(config_path: str | None) -> dict:
    """The model keys of a YAML config, as ``resolve_architecture`` arguments."""
    if not config_path:
        return {}
    from resnet_builder.config import load_config

    cfg = load_config(config_path)
    m = cfg.model
    request = {"block_type": m.block_type, "stem_filters": m.stem_filters,
               "head": m.head, "dropout": m.dropout,
               "input_shape": [cfg.data.image_size, cfg.data.image_size, cfg.data.channels]}
    if m.num_classes:
        request["num_classes"] = m.num_classes
    if m.preset:
        request["preset"] = m.preset
    elif m.stackwise_blocks:
        request.update(stackwise_filters=m.stackwise_filters, stackwise_blocks=m.stackwise_blocks,
                       stackwise_strides=m.stackwise_strides)
    else:
        request["depth"] = m.depth
    return {k: v for k, v in request.items() if v is not None}


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def format_summary(s: dict) -> str:
    """The terminal form of ``model_summary`` (plus timings)."""
    lines = []
    if s["source"] == "depth":
        default = "default block type" if s["also_fits"] else "the only rule that fits"
        lines.append(f"ResNetV2-{s['depth']}: rule {s['rule']}, n={s['n']} ({default})")
        if s["also_fits"]:
            other = "basic" if s["block_type"] == "block" else "bottleneck"
            lines.append(f"  {s['depth']} also fits {s['also_fits']}: pass --block-type {other}")
    elif s["source"] == "preset":
        lines.append(f"preset {s['preset']} (block type {s['block_type']})")
    else:
        lines.append(f"stackwise network (block type {s['block_type']})")
    h, w, c = s["input_shape"]
    lines.append(f"input {h}x{w}x{c}, {s['stem']} stem with {s['stem_filters']} filters, "
                 f"stride in the {s['stride_position']} unit of each stage, {s['layers']} layers")
    lines.append(f"{'stage':>5} {'level':>5} {'filters':>7} {'out':>5} {'blocks':>6} "
                 f"{'stride':>6} {'output':>9}")
    for st in s["stages"]:
        oh, ow = st["output_size"]
        size = f"{oh}x{ow}" if oh else "?"
        lines.append(f"{st['stage']:>5} {st['level']:>5} {st['filters']:>7} "
                     f"{st['out_channels']:>5} {st['blocks']:>6} {st['stride']:>6} {size:>9}")
    lines.append(f"head: {s['head']}, {s['num_classes']} classes")
    lines.append(f"parameters: {s['params_total']:,} total, {s['params_trainable']:,} trainable, "
                 f"{s['params_non_trainable']:,} non-trainable")
    lines.append(f"multiply-adds: {_human(s['macs_per_image'])} per image")
    for key, label in (("output", "wrote"), ("plot", "drew")):
        if s.get(key):
            lines.append(f"{label} {s[key]}")
    lines.append(f"done in {s['build_seconds']:.2f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- depths, presets

@main.command()
@click.option("--max", "max_depth", type=click.IntRange(min=8), default=200, show_default=True,
              help="List depths up to this one.")
@click.option("--block-type", type=click.Choice(["basic", "bottleneck", "basic_block", "block"]),
              help="Only this rule.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def depths(max_depth: int, block_type: str | None, as_json: bool) -> None:
    """List valid depths for both rules with n and parameter count (10 classes, 32x32)."""
    from resnet_builder.depth import RULE_NAMES, valid_depths
    from resnet_builder.model.architecture import resolve_architecture
    from resnet_builder.model.summary import model_summary

    rows = []
    for rule in valid_depths(max_depth, block_type):
        arch = resolve_architecture(rule.depth, block_type=rule.block_type)
        rows.append({"depth": rule.depth, "block_type": rule.block_type,
                     "rule": RULE_NAMES[rule.block_type], "n": rule.n,
                     "params": model_summary(arch, 10)["params_total"],
                     "default": rule.block_type == "block" or rule.also_fits is None})
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'depth':>5}  {'rule':<24} {'n':>4} {'params':>12}  note")
    for r in rows:
        note = "" if r["default"] else f"needs --block-type basic ({r['depth']} fits both)"
        click.echo(f"{r['depth']:>5}  {r['rule']:<24} {r['n']:>4} {r['params']:>12,}  {note}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def presets(as_json: bool) -> None:
    """List presets with their backbone parameter counts."""
    from resnet_builder.model.presets import PRESETS

    if as_json:
        click.echo(json.dumps({k: {**v} for k, v in PRESETS.items()}))
        return
    click.echo(f"{'preset':<22} {'params':>12}  {'weights':<8} description")
    for name, entry in PRESETS.items():
        weights = "imagenet" if "weights" in entry else "-"
        click.echo(f"{name:<22} {entry['params']:>12,}  {weights:<8} {entry['description']}")


# --------------------------------------------------------------------------- config

@main.command("config")
@click.option("--show", is_flag=True, help="Print the full default config with comments.")
@click.argument("path", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key, e.g. train.epochs=5 (repeatable).")
def config_command(show: bool, path: str | None, overrides: tuple[str, ...]) -> None:
    """Show the default config, or check PATH (with --set overrides) and print it resolved."""
    from resnet_builder.config import config_to_dict, default_config_yaml, load_config

    if show or not path:
        click.echo(default_config_yaml(), nl=False)
        return
    import yaml

    cfg = load_config(path, overrides)
    click.echo(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), nl=False)


# --------------------------------------------------------------------------- train

def _config_keys_epilog() -> str:
    from resnet_builder.config import describe_keys

    lines = ["\b", "Config keys (section.key  default  what it does):"]
    for key, default, help_text in describe_keys():
        lines.append(f"  {key:<34} {default:<12} {help_text.splitlines()[0][:90]}")
    return "\n".join(lines)


@main.command(epilog=_config_keys_epilog())
@click.argument("config_path", required=False, metavar="CONFIG.yaml",
                type=click.Path(exists=True, dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set train.epochs=5 (repeatable).")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False),
              help="Continue this run folder after its last completed epoch.")
@click.option("--name", help="Run name (runs/train/<name>, auto-numbered); = run.name.")
@click.option("--project", help="Parent folder of runs; = run.project.")
@click.option("--exist-ok", is_flag=True, default=None, help="Reuse the run folder if it exists.")
@click.option("--progress", type=click.Choice(["auto", "bar", "line", "none"]),
              help="Progress display; = run.progress.")
@click.option("--strategy", type=click.Choice(["auto", "none", "mirrored", "multi_worker", "tpu"]),
              help="Distribution strategy; = distribute.strategy.")
def train(config_path, overrides, resume_dir, name, project, exist_ok, progress,
          strategy) -> None:
    """Train a model from CONFIG.yaml (every key has a default; see below)."""
    from resnet_builder.config import load_config
    from resnet_builder.training import run as trainer

    flags = {"run.name": name, "run.project": project, "run.exist_ok": exist_ok,
             "run.progress": progress, "distribute.strategy": strategy}
    overrides = tuple(overrides) + tuple(f"{k}={v}" for k, v in flags.items()
                                         if v is not None)
    if resume_dir:
        if config_path:
            raise click.UsageError("give either CONFIG.yaml or --resume RUN, not both")
        trainer.resume(resume_dir, overrides)
        return
    if not config_path:
        raise click.UsageError("give a config file (e.g. configs/digits.yaml) or --resume RUN")
    trainer.train(load_config(config_path, overrides))


# ---- predict, evaluate, export

def _run_options(default_project: str):
    """--project/--name/--exist-ok, as for train: results go to PROJECT/NAME (exp, exp2, ...)."""
    def decorate(f):
        f = click.option("--exist-ok", is_flag=True,
                         help="Reuse PROJECT/NAME instead of numbering a new folder.")(f)
        f = click.option("--name", default="exp", show_default=True,
                         help="Output folder name; exp2, exp3, ... when taken.")(f)
        f = click.option("--project", default=default_project, show_default=True,
                         help="Parent folder of output folders.")(f)
        return f
    return decorate


def _show_skipped(skipped, shown: int = 50) -> None:
    for s in skipped[:shown]:
        click.echo(f"  skipped {s.path}: {s.reason}", err=True)
    if len(skipped) > shown:
        click.echo(f"  ... and {len(skipped) - shown} more (see skipped.csv)", err=True)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--model", "-m", "model_source", type=click.Path(exists=True),
              help="A .keras file or a run folder (its best.keras). "
                   "Default: the newest run under runs/train.")
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
@_run_options("runs/predict")
def predict(sources, model_source, top_k, batch_size, fmt, grid, grid_max, cam, project, name,
            exist_ok) -> None:
    """Predict classes of images: SOURCES are image files, folders (recursive) or globs.

    Writes PROJECT/NAME/predictions.csv (path, label, probability, then the top-k
    labels and probabilities) and skipped.csv (files that could not be read, with
    the reason). Unreadable files never stop the run; the exit code is non-zero
    only when nothing could be predicted.
    """
    from resnet_builder.inference.predict import predict_to_folder

    def said(im) -> None:
        note = "" if model_source else " (newest run under runs/train)"
        click.echo(f"model: {im.source}{note}, input {im.image_size}x{im.image_size}x"
                   f"{im.channels}, {im.num_classes} classes")

    report = predict_to_folder(sources, model_source, top_k=top_k, batch_size=batch_size,
                               fmt=fmt, grid=grid, grid_max=grid_max, cam=cam, project=project,
                               name=name, exist_ok=exist_ok, on_model=said)
    for p in report.shown:
        click.echo(f"{p.path}: {p.label} {p.probability:.3f}")
    if report.predicted > len(report.shown):
        click.echo(f"... {report.predicted - len(report.shown)} more in {report.output.name}")
    _show_skipped(report.skipped)
    click.echo(f"predicted {report.predicted} image(s), skipped {len(report.skipped)}, "
               f"{report.images_per_second:.1f} images/s{' (with Grad-CAM)' if cam else ''}")
    wrote = [report.output.name, "skipped.csv"]
    if report.grid:
        wrote.append(report.grid.name)
    if report.cam_folder:
        wrote.append("cam/")
    click.echo(f"wrote {report.folder}: {', '.join(wrote)}")


@main.command()
@click.argument("run_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--model", "-m", "model_source", type=click.Path(exists=True),
              help="A .keras file or run folder (default: RUN_DIR's best.keras, else the newest "
                   "run under runs/train).")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False),
              help="A folder of class folders; classes are matched to the model's by name.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Evaluate on this config's validation split.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="k of the top-k accuracy (capped at the number of classes).")
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Write here instead of PROJECT/NAME.")
@_run_options("runs/evaluate")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of the table.")
def evaluate(run_dir, model_source, data_dir, config_path, batch_size, top_k, output, project,
             name, exist_ok, as_json) -> None:
    """Accuracy, top-k accuracy, per-class precision/recall/F1 and a confusion matrix.

    On RUN_DIR's validation split (its config.yaml data and best.keras), on --data
    FOLDER (FOLDER/<class>/images) or on --config CONFIG.yaml's validation split.
    Writes metrics.json and confusion_matrix.png to PROJECT/NAME or --output.
    """
    from resnet_builder.inference.evaluate import evaluate_to_folder, format_metrics

    result = evaluate_to_folder(model_source, run=run_dir, data=data_dir, config=config_path,
                                batch_size=batch_size, top_k=top_k, output=output,
                                project=project, name=name, exist_ok=exist_ok)
    if as_json:
        click.echo(json.dumps(result.metrics))
        return
    click.echo(f"model: {result.model}")
    click.echo(f"data: {result.data}")
    _show_skipped(result.skipped)
    click.echo(format_metrics(result.metrics))
    click.echo(f"wrote {result.folder}: {', '.join(result.files)} "
               f"({result.metrics['images_per_second']} images/s)")


@main.command("export")
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
@_run_options("runs/export")
def export_command(model_source, formats, calibration, samples, output, project, name,
                   exist_ok) -> None:
    """Export MODEL (a .keras file or run folder; default: the newest run) and check it.

    Every export takes raw 0..255 pixels (normalisation is inside) and is compared
    with the Keras model on sample images; one whose top-1 agreement is under 99%
    (95% for tflite-int8) fails the command. Writes the files, labels.txt and
    export.json to PROJECT/NAME or --output.
    """
    from resnet_builder.inference.export import describe_result, export_model

    if model_source is None:
        from resnet_builder.runs import latest_run

        model_source = str(latest_run())
        click.echo(f"model: {model_source} (newest run under runs/train)")
    report = export_model(model_source, formats, calibration=calibration, samples=samples,
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


# --------------------------------------------------------------------------- bench

@main.command()
@model_options
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed training steps (after warm-up).")
@click.option("--warmup", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--xla", is_flag=True, help="Compile our step with XLA.")
@click.option("--no-pipelines", is_flag=True, help="Skip the input-pipeline measurements.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench(batch_size, steps, warmup, xla, no_pipelines, as_json, **opts) -> None:
    """Measure our training step against model.fit, prediction and the machine (synthetic data)."""
    from resnet_builder.benchmark.run import run_benchmark

    arch, model_args = architecture_from_options(opts)
    result = run_benchmark(arch, num_classes=model_args["num_classes"], batch_size=batch_size,
                           steps=steps, warmup=warmup, xla=xla, pipelines=not no_pipelines)
    if as_json:
        click.echo(json.dumps(result))
        return
    for key, value in result.items():
        click.echo(f"{key:<38} {value}")
