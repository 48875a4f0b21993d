"""The ``resnet-builder`` command: parse, call the Python API, print, exit.

No logic lives here. User errors (``UserError``, and ``ValueError`` from the
model's argument checks) become one message and a non-zero exit code, never
a traceback (set ``RESNET_BUILDER_DEBUG=1`` to see one). TensorFlow is
imported only inside the commands that need it.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import signal
import sys
import time
import warnings

import click

from resnet_builder.cli_data import pack
from resnet_builder.cli_errors import known_failure
from resnet_builder.cli_inference import evaluate, export_command, plain_folder_name, predict
from resnet_builder.cli_model import (
    BLOCK_TYPES,
    architecture_from_options,
    choices_of,
    model_options,
)
from resnet_builder.depth import MAX_DEPTH
from resnet_builder.errors import ArgumentError, UserError
from resnet_builder.interrupts import Terminated, remembering_interrupts
from resnet_builder.runs import TRAIN_PROJECT
from resnet_builder.runtime import starts_tensorflow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ chatter off the terminal


class CommandFailed(click.ClickException):
    """A ClickException that carries the exit code the error asked for."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Group(click.Group):
    """Turns errors into clean exits (the commands that need TensorFlow start it themselves,
    ``runtime.starts_tensorflow``, once their arguments are parsed).

    A ``UserError`` (or ``ArgumentError``, a bad model argument) is one message and
    its exit code, as is a damaged packed shard (TensorFlow's ``DataLossError`` from the
    record reader). Anything else is a bug: the CLI says so, names the error and
    how to see the traceback (``RESNET_BUILDER_DEBUG=1``), and exits 1.
    """

    def invoke(self, ctx: click.Context):
        with warnings.catch_warnings():  # restores Python's own display afterwards
            warnings.showwarning = _show_warning
            return self._invoke_sorting_errors(ctx)

    def _invoke_sorting_errors(self, ctx: click.Context):
        try:
            with remembering_interrupts():  # a Ctrl-C Python dropped still stops train
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:  # not click's "Aborted!" and exit 1
            raise CommandFailed("interrupted (Ctrl-C)", 130) from None
        except Terminated:  # before (or after) a training loop, which saves and says more
            raise CommandFailed("terminated (SIGTERM)", 128 + signal.SIGTERM) from None
        except (UserError, ArgumentError) as exc:
            if os.environ.get("RESNET_BUILDER_DEBUG"):
                raise
            code = exc.exit_code if isinstance(exc, UserError) else 2
            raise CommandFailed(str(exc), code) from None
        except Exception as exc:
            if os.environ.get("RESNET_BUILDER_DEBUG") or _output_pipe_closed(exc):
                raise  # click's main ends a closed pipe quietly (`predict ... | head`)
            known = known_failure(exc)
            if known is not None:
                raise CommandFailed(str(known), known.exit_code) from None
            raise CommandFailed(
                f"{type(exc).__name__}: {exc}\n  this is a bug in resnet-builder, not something "
                "you did; please report it with the traceback, which RESNET_BUILDER_DEBUG=1 "
                "shows", 1) from None


def _output_pipe_closed(exc: Exception) -> bool:
    """The reader of our stdout went away (``| head``): a "this is a bug" was the answer."""
    if not isinstance(exc, BrokenPipeError):
        return False
    try:  # a pipe whose reader closed polls as an error (a socket's broken pipe is no match)
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), stdout not a file
        return False


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning meant for the user (``UserWarning``: files skipped, weights that only
    partly fit) as ``warning: ...`` on stderr, not Python's form with our source line."""
    if issubclass(category, UserWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno, line), err=True,
                   nl=False)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="resnet-builder")
def main() -> None:
    """Build, train and run pre-activation ResNets (ResNetV2) of any depth."""


# --------------------------------------------------------------------------- build

@main.command()
@model_options
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write the model to this .keras file.")
@click.option("--plot", type=click.Path(dir_okay=False, writable=True),
              help="Draw the architecture to this .png (needs pydot and graphviz).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def build(output, plot, as_json, **opts) -> None:
    """Build a ResNetV2 classifier and summarise it (optionally save and plot it)."""
    from resnet_builder.model.presets import presets_with_weights
    from resnet_builder.model.summary import format_summary, model_summary

    start = time.perf_counter()
    arch, model_args = architecture_from_options(opts)
    summary = model_summary(arch, model_args["num_classes"], model_args["head"])
    summary["plan_seconds"] = round(time.perf_counter() - start, 4)
    if output or plot:
        from resnet_builder.model.saving import save_model_file

        summary.update(save_model_file(arch, output=output, plot=plot, **model_args))
        if output and arch.preset in presets_with_weights():
            summary["note"] = "; ".join(filter(None, [summary.get("note"), (
                f"{output} holds freshly initialised weights, not {arch.preset}'s ImageNet "
                f"weights: train with model.preset: {arch.preset} (or call ResNetV2Backbone."
                f"from_preset({arch.preset!r}) in Python) to start from them")]))
    summary["build_seconds"] = round(time.perf_counter() - start, 3)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(format_summary(summary))


# --------------------------------------------------------------------------- depths, presets

@main.command()
@click.option("--max", "max_depth", type=click.IntRange(min=8, max=MAX_DEPTH), default=200,
              show_default=True,
              help="List depths up to this one.")
@click.option("--block-type", type=click.Choice(BLOCK_TYPES),
              help="Only this rule.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def depths(max_depth: int, block_type: str | None, as_json: bool) -> None:
    """List valid depths for both rules with n and parameter count (10 classes, 32x32)."""
    from resnet_builder.depth import LAYERS_PER_UNIT, RULE_NAMES, valid_depths
    from resnet_builder.model.architecture import resolve_architecture
    from resnet_builder.model.summary import model_summary

    def params(block: str, n: int) -> int:
        depth = LAYERS_PER_UNIT[block] * n + 2
        return model_summary(resolve_architecture(depth, block_type=block), 10)["params_total"]

    # Linear in n: a stage's units after its first are alike, so two plans per rule give every
    # count (``--max 2000`` listed in 1 s, not the minute of a plan per depth).
    first = {block: params(block, 1) for block in LAYERS_PER_UNIT}
    per_unit = {block: params(block, 2) - first[block] for block in LAYERS_PER_UNIT}
    rows = []
    for rule in valid_depths(max_depth, block_type):
        rows.append({"depth": rule.depth, "block_type": rule.block_type,
                     "rule": RULE_NAMES[rule.block_type], "n": rule.n,
                     "params": first[rule.block_type] + (rule.n - 1) * per_unit[rule.block_type],
                     "default": rule.block_type == "block" or rule.also_fits is None})
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'depth':>5}  {'rule':<24} {'n':>4} {'params':>12}  note")
    for r in rows:
        note = "" if r["default"] or block_type else (
            f"needs --block-type basic ({r['depth']} fits both)")
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
    """Show the default config, or check PATH and/or --set overrides and print the result."""
    from resnet_builder.config import config_yaml, default_config_yaml, load_config

    if show and (path or overrides):
        raise click.UsageError("--show prints the defaults; leave it out to check PATH or --set")
    if show or not (path or overrides):
        click.echo(default_config_yaml(), nl=False)
        return
    click.echo(config_yaml(load_config(path, overrides)), nl=False)


# --------------------------------------------------------------------------- train

def _config_keys_epilog() -> str:
    from resnet_builder.config import describe_keys

    lines = ["\b", "Config keys (section.key  default  what it does):"]
    for key, default, help_text in describe_keys():
        lines.append(f"  {key:<34} {default:<12} {help_text.splitlines()[0][:90]}")
    return "\n".join(lines)


def _run_folder(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    """--resume takes the run folder; its checkpoint.npz (or any file in it) names it."""
    if path is not None and not os.path.isdir(path):
        folder = os.path.dirname(path) or "."
        raise click.BadParameter(f"{path} is a file: give the run folder it is in, e.g. "
                                 f"--resume {shlex.quote(folder)}")
    return path


@main.command(epilog=_config_keys_epilog())
@click.argument("config_path", required=False, metavar="CONFIG.yaml",
                type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_option", type=click.Path(exists=True, dir_okay=False),
              help="The config file, as an option (same as the CONFIG.yaml argument).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set train.epochs=5 (repeatable).")
@click.option("--resume", "resume_dir", type=click.Path(exists=True), callback=_run_folder,
              help="Continue this run folder after its last completed epoch.")
@click.option("--name", callback=plain_folder_name,
              help=f"Run name ({TRAIN_PROJECT}/<name>, auto-numbered); = run.name.")
@click.option("--project", help="Parent folder of runs; = run.project.")
@click.option("--exist-ok", is_flag=True, default=None,
              help="Reuse the run folder if it exists (an earlier run's files there are "
                   "removed).")
@click.option("--progress", type=click.Choice(choices_of("run.progress")),
              help="Progress display; = run.progress.")
@click.option("--strategy", type=click.Choice(choices_of("distribute.strategy")),
              help="Distribution strategy; = distribute.strategy.")
def train(config_path, config_option, overrides, resume_dir, name, project, exist_ok, progress,
          strategy) -> None:
    """Train a model from CONFIG.yaml (every key has a default; see below)."""
    from resnet_builder.config import load_config
    from resnet_builder.runtime import import_tensorflow_quietly

    if config_path and config_option and config_path != config_option:
        raise click.UsageError("give the config once: CONFIG.yaml or --config CONFIG.yaml")
    config_path = config_path or config_option
    flags = {"run.name": _quoted(name), "run.project": _quoted(project),
             "run.exist_ok": exist_ok, "run.progress": progress, "distribute.strategy": strategy}
    overrides = tuple(overrides) + tuple(f"{k}={v}" for k, v in flags.items()
                                         if v is not None)
    if resume_dir:
        if config_path:
            raise click.UsageError("give either CONFIG.yaml or --resume RUN, not both")
        for flag, value in (("--name", name), ("--project", project), ("--exist-ok", exist_ok)):
            if value is not None:
                raise click.UsageError(f"{flag} is for a new run; --resume RUN goes on in RUN's "
                                       "own folder")
        import_tensorflow_quietly()
        from resnet_builder.training import api

        api.resume(resume_dir, overrides)
        return
    if not config_path:
        raise click.UsageError("give a config file (e.g. configs/digits.yaml) or --resume RUN")
    cfg = load_config(config_path, overrides)  # checked before TensorFlow's ~10 s start
    import_tensorflow_quietly()
    from resnet_builder.training import api

    api.train(cfg)


def _quoted(text: str | None) -> str | None:
    """A flag's text as a YAML string that reads back as typed (``--name null`` is the
    folder "null", ``--name 'a #2'`` keeps its ``#2``)."""
    return None if text is None else "'" + text.replace("'", "''") + "'"


main.add_command(predict)
main.add_command(evaluate)
main.add_command(export_command)
main.add_command(pack)


# --------------------------------------------------------------------------- bench


def _check_trainable_shape(shape: tuple) -> None:
    """bench runs the trainer's loop, whose images are data.image_size squared with the
    channels the config allows: asked before measuring (it failed ~20 s in, naming a --set
    the user never typed)."""
    from resnet_builder.config import key_specs

    height, width, channels = shape
    if height is None or height != width:
        raise click.BadParameter(f"bench trains on square images (data.image_size); got "
                                 f"{height}x{width}", param_hint="--input-shape")
    size, allowed = key_specs()["data"]["image_size"], key_specs()["data"]["channels"].choices
    if not size.min <= height <= size.max:
        raise click.BadParameter(f"bench trains as train does: data.image_size must be in "
                                 f"[{size.min:g}, {size.max:g}]; got {height}",
                                 param_hint="--input-shape")
    if channels not in allowed:
        raise click.BadParameter(f"bench trains as train does: data.channels must be one of "
                                 f"{', '.join(map(str, allowed))}; got {channels}",
                                 param_hint="--input-shape")


@main.command()
@model_options
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Training steps timed per round for our step, the loop and fit "
                   "alike (at least 20 are run; after warm-up).")
@click.option("--warmup", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--xla", is_flag=True, help="Compile our step with XLA.")
@click.option("--no-pipelines", is_flag=True, help="Skip the input-pipeline measurements.")
@click.option("--mixed-precision",  # hardware.mixed_precision's, less auto (bench says which)
              type=click.Choice([c for c in choices_of("hardware.mixed_precision") if c != "auto"]),
              default="off", show_default=True,
              help="Compute dtype for our step, the trainer loop and fit alike.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@starts_tensorflow
def bench(batch_size, steps, warmup, xla, no_pipelines, mixed_precision, as_json,
          **opts) -> None:
    """Measure our training step against model.fit, prediction and the machine (synthetic data)."""
    from resnet_builder.benchmark.run import run_benchmark

    if (opts.get("num_classes") or 10) < 2:  # build allows 1 (a one-label sigmoid model)
        raise click.BadParameter("bench trains a softmax classifier: at least 2",
                                 param_hint="--num-classes")
    arch, model_args = architecture_from_options(opts, data_classes=False)
    _check_trainable_shape(arch.input_shape)
    if model_args.get("task") == "multilabel":
        click.echo("note: bench measures the softmax classifier; the config's model.task "
                   "multilabel is not measured", err=True)
    result = run_benchmark(arch, num_classes=model_args["num_classes"],
                           head=model_args["head"], dropout=model_args["dropout"],
                           batch_size=batch_size,
                           steps=steps, warmup=warmup, xla=xla, pipelines=not no_pipelines,
                           mixed_precision=mixed_precision)
    if as_json:
        click.echo(json.dumps(result))
        return
    for key, value in result.items():
        click.echo(f"{key:<38} {value}")
