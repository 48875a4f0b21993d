"""The training config: every key, its default, its type and its range, in one place.

A config is a tree of small dataclasses, one per YAML section. Each field's
``metadata`` carries the help text and the allowed values, so validation, the
``config --show`` listing, ``train --help`` and the README table all read the
same facts.

Below the schema: ``load_config`` (YAML file + ``--set`` overrides), the
validation behind it (every mistake becomes a ``ConfigError`` that names the
key, where it was written and what is allowed), and the renderers for the
default config, the resolved config of a run and the key table.

This module must stay pure Python + PyYAML: the CLI validates a config before
it pays for importing TensorFlow.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import textwrap
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from resnet_builder.errors import ConfigError
from resnet_builder.files import atomic_write_text


def _key(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
         max: float | None = None, nullable: bool = False, types: tuple | None = None) -> Any:
    """A dataclass field with the facts validation and docs need."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "nullable": nullable,
            "types": types}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


BLOCK_TYPES = ("basic", "bottleneck", "basic_block", "block")


@dataclass
class ModelConfig:
    """How the network is said: a CIFAR-style depth, stackwise lists, or a preset."""

    depth: int | None = _key(20, "Network depth: 9n+2 (bottleneck) or 6n+2 (basic); CIFAR-style "
                             "network. Ignored when preset or the stackwise_* lists are set.",
                             min=3, nullable=True)
    preset: str | None = _key(None, "Named preset (see `resnet-builder presets`).", nullable=True)
    block_type: str | None = _key(None, "basic | bottleneck (keras-cv: basic_block | block); "
                                  "null = the depth rule's default (bottleneck when 9n+2 fits).",
                                  choices=BLOCK_TYPES, nullable=True)
    stackwise_filters: list[int] | None = _key(None, "Explicit filters per stage.", min=1,
                                               nullable=True)
    stackwise_blocks: list[int] | None = _key(None, "Explicit blocks per stage.", min=1,
                                              nullable=True)
    stackwise_strides: list[int] | None = _key(None, "Explicit strides per stage.", min=1,
                                               nullable=True)
    stem_filters: int | None = _key(None, "Stem width; null = 16 for depth networks, 64 for "
                                    "stackwise/preset ones (the tutorial uses 32).",
                                    min=1, nullable=True)
    bn_momentum: float = _key(0.99, "Batch-norm moving-average momentum (Keras/keras-cv: 0.99; "
                              "0.9 settles faster when an epoch has few steps).",
                              min=0.0, max=0.999)
    head: str = _key("gap", "Classifier head: gap (global pooling + Dense) or tutorial "
                     "(BN-ReLU-AvgPool-Flatten-Dense(512)-BN-Dropout-Dense).",
                     choices=("gap", "tutorial"))
    dropout: float = _key(0.0, "Dropout before the last Dense layer.", min=0.0, max=0.99)
    num_classes: int | None = _key(None, "Classes; null = taken from the data.", min=2,
                                   nullable=True)
    weights: str | None = _key(None, "Start from: a preset with weights (e.g. "
                               "resnet50_v2_imagenet) or a .keras / .weights.h5 file.",
                               nullable=True)
    freeze_backbone_epochs: int = _key(0, "Epochs to train with the backbone frozen (its "
                                       "batch-norm in inference mode) before fine-tuning all.",
                                       min=0)


@dataclass
class DataConfig:
    """Where images come from and how they are batched."""

    source: str = _key("digits", "Where images come from.",
                       choices=("digits", "cifar10", "cifar100", "folder", "npz", "synthetic"))
    path: str | None = _key(None, "Folder or file for cifar10/cifar100/folder/npz.", nullable=True)
    image_size: int = _key(32, "Images are resized to image_size x image_size.", min=8, max=4096)
    channels: int = _key(3, "1 (grayscale) or 3 (RGB).", choices=(1, 3))
    batch_size: int = _key(128, "Global batch size (split across replicas).", min=1)
    validation_split: float = _key(0.2, "Share held out for validation when the source has no "
                                   "validation split of its own.", min=0.0, max=0.9)
    cache: bool = _key(True, "Cache decoded images in memory when they fit.")
    normalize: bool = _key(True, "Per-channel mean/std computed on the training split, stored "
                           "in the model.")
    synthetic_samples: int = _key(512, "Images in the synthetic source.", min=2)
    synthetic_classes: int = _key(10, "Classes in the synthetic source.", min=2)
    limit: int | None = _key(None, "Use at most this many training images (quick tries).",
                             min=1, nullable=True)


@dataclass
class AugmentConfig:
    """Random changes to training images."""

    random_crop_padding: int = _key(0, "Pad by this many pixels and crop back at random "
                                    "(He et al.: 4). 0 = off.", min=0, max=64)
    horizontal_flip: bool = _key(False, "Random left-right flips.")
    random_scale: float = _key(0.0, "Random zoom in/out by up to this fraction. 0 = off.",
                               min=0.0, max=0.9)


@dataclass
class OptimConfig:
    """Optimizer and loss."""

    optimizer: str = _key("sgd", "sgd, adam or adamw.", choices=("sgd", "adam", "adamw"))
    lr: float = _key(0.1, "Peak learning rate.", min=0.0)
    momentum: float = _key(0.9, "SGD momentum.", min=0.0, max=1.0)
    nesterov: bool = _key(False, "Nesterov momentum (SGD).")
    weight_decay: float = _key(1e-4, "L2 weight decay (decoupled for adamw).", min=0.0)
    label_smoothing: float = _key(0.0, "Label smoothing.", min=0.0, max=0.99)
    scale_lr_with_replicas: bool = _key(False, "Multiply lr by the number of replicas "
                                        "(linear scaling rule; warmup_lr and min_lr stay).")


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, with optional warm-up."""

    type: str = _key("cosine", "constant, step or cosine.", choices=("constant", "step", "cosine"))
    milestones: list[int] = _key([], "Step schedule: where lr is multiplied by gamma (in "
                                 "`unit`, increasing). Ignored by other schedules.", min=1)
    unit: str = _key("epochs", "Unit of milestones and warmup: epochs or iterations.",
                     choices=("epochs", "iterations"))
    gamma: float = _key(0.1, "Step schedule factor.", min=0.0, max=1.0)
    warmup: int = _key(0, "Warm-up length (in `unit`). 0 = off.", min=0)
    warmup_mode: str = _key("linear", "linear (ramp from warmup_lr to lr) or constant "
                            "(hold warmup_lr, He et al.).", choices=("linear", "constant"))
    warmup_lr: float = _key(0.0, "Learning rate at the start of warm-up.", min=0.0)
    min_lr: float = _key(0.0, "Cosine schedule floor.", min=0.0)


@dataclass
class TrainConfig:
    """How long to train and when to stop."""

    epochs: int = _key(15, "Epochs to train.", min=1)
    early_stopping_patience: int = _key(0, "Stop after this many epochs without a better "
                                        "val_accuracy. 0 = off.", min=0)
    eval_batch_size: int | None = _key(None, "Validation batch size; null = data.batch_size.",
                                       min=1, nullable=True)


@dataclass
class RunConfig:
    """Where results go and what is shown while training."""

    project: str = _key("runs/train", "Parent folder of run folders.")
    name: str = _key("exp", "Run name; exp, exp2, ... when taken (unless exist_ok). "
                     "multi_worker uses it as is and continues the run when restarted.")
    exist_ok: bool = _key(False, "Reuse an existing run folder of the same name.")
    progress: str = _key("auto", "auto (bar on a terminal, lines otherwise), bar, line or none.",
                         choices=("auto", "bar", "line", "none"))
    tensorboard: bool = _key(True, "Write TensorBoard logs to <run>/tensorboard.")
    plots: bool = _key(True, "Write curves.png and confusion_matrix.png.")


@dataclass
class HardwareConfig:
    """Seed, precision and compilation."""

    seed: int | None = _key(0, "Random seed; same seed + config = same results.csv on CPU.",
                            min=0, max=2**32 - 1, nullable=True)
    fused_batchnorm: bool = _key(True, "Train batch norm through TensorFlow's fused kernel "
                                 "(same weights and files; 1.6-1.8x faster on CPU than "
                                 "Keras' element-wise batch norm).")
    deterministic: bool = _key(False, "TensorFlow's op determinism (slower by about a third on "
                               "CPU). CPU runs with a seed repeat without it; GPU runs need it.")
    mixed_precision: str = _key("auto", "auto (float16 when a GPU is visible, else off), off, "
                                "float16 (with loss scaling) or bfloat16 (fast on CPUs with "
                                "AVX512_BF16).", choices=("auto", "off", "float16", "bfloat16"))
    xla: bool = _key(False, "Compile the training step with XLA (jit_compile).")
    threads: int = _key(0, "CPU threads for TensorFlow ops; 0 = TensorFlow's choice.", min=0)


@dataclass
class DistributeConfig:
    """Training on several devices."""

    strategy: str = _key("auto", "auto (mirrored with more than one GPU, else none), none, "
                         "mirrored, multi_worker (cluster from TF_CONFIG) or tpu.",
                         choices=("auto", "none", "mirrored", "multi_worker", "tpu"))
    connect_timeout: float = _key(120.0, "multi_worker: seconds every task waits for all "
                                  "tasks of TF_CONFIG to start before it gives up, naming "
                                  "the missing ones.", min=1.0)
    sync_batchnorm: bool = _key(False, "Batch-norm statistics over the global batch (all "
                                "replicas, as on one device) instead of each replica's "
                                "share; one extra all-reduce per BN layer and step.")


@dataclass
class Config:
    """The whole training config: one dataclass per YAML section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    distribute: DistributeConfig = field(default_factory=DistributeConfig)


__all__ = [
    "Config",
    "KeySpec",
    "config_from_dict",
    "config_to_dict",
    "default_config_yaml",
    "describe_keys",
    "dump_config",
    "key_specs",
    "load_config",
    "markdown_table",
    "validate_config",
]

SECTION_CLASSES: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}
STACKWISE = ("stackwise_filters", "stackwise_blocks", "stackwise_strides")


# ----------------------------------------------------------------------------- schema facts


@dataclass(frozen=True)
class KeySpec:
    """Everything known about one key, read once from its dataclass field."""

    section: str
    name: str
    types: tuple[Any, ...]  # accepted Python types: bool, int, float, str or list[int]
    default: Any
    help: str
    choices: tuple | None
    min: float | None
    max: float | None
    nullable: bool

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


def _accepted_types(annotation: Any, override: tuple | None) -> tuple[Any, ...]:
    """The types a key takes: the field's ``types`` metadata, else its annotation minus None."""
    if override:
        return tuple(override)
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(a for a in get_args(annotation) if a is not type(None))
    return (annotation,)


def _spec(section: str, f: dataclasses.Field, annotation: Any) -> KeySpec:
    meta = f.metadata
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return KeySpec(section, f.name, _accepted_types(annotation, meta.get("types")), default,
                   meta["help"], meta.get("choices"), meta.get("min"), meta.get("max"),
                   bool(meta.get("nullable")))


@cache
def key_specs() -> dict[str, dict[str, KeySpec]]:
    """Section -> key -> KeySpec, in the order the dataclasses declare them."""
    out: dict[str, dict[str, KeySpec]] = {}
    for section, cls in SECTION_CLASSES.items():
        hints = get_type_hints(cls)
        out[section] = {f.name: _spec(section, f, hints[f.name]) for f in dataclasses.fields(cls)}
    return out


def _home_section(key: object, besides: str | None = None) -> str | None:
    """The section that has a key of this name, to catch keys written in the wrong section."""
    for section, specs in key_specs().items():
        if section != besides and key in specs:
            return section
    return None


# ----------------------------------------------------------------------------- words for values


def _yaml_text(value: Any) -> str:
    """One value as one line of flow YAML that reads back as the same value anywhere."""
    style = '"' if isinstance(value, str) and not value.isprintable() else None
    text = yaml.safe_dump([value], default_flow_style=True, default_style=style,
                          width=2**30, allow_unicode=True)
    return text.strip()[1:-1]


def _show(value: Any) -> str:
    """A received value as an error message shows it: strings quoted, the rest as YAML."""
    return repr(value) if isinstance(value, str) else _yaml_text(value)


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {int: "an integer", float: "a decimal number", str: "a string", list: "a list",
             dict: "a mapping"}
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)


def _type_words(typ: Any) -> str:
    if get_origin(typ) is list:
        item = get_args(typ)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}[item]
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[typ]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _range_words(spec: KeySpec) -> str:
    if spec.min is not None and spec.max is not None:
        return f"in [{_num(spec.min)}, {_num(spec.max)}]"
    if spec.min is not None:
        return f">= {_num(spec.min)}"
    if spec.max is not None:
        return f"<= {_num(spec.max)}"
    return ""


def _choices(spec: KeySpec) -> str:
    return ", ".join(str(c) for c in spec.choices or ())


def _allowed(spec: KeySpec) -> str:
    """What a key accepts, in words shared by error hints and the docs."""
    if spec.choices:
        words = "one of " + _choices(spec)
    else:
        words = " or ".join(_type_words(t) for t in spec.types)
        if rng := _range_words(spec):
            words += " " + rng
    return words + (", or null" if spec.nullable else "")


# ----------------------------------------------------------------------------- reading YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader reading YAML 1.2 style: only true/false are booleans, and 1e-4 is a number.

    Plain PyYAML reads ``mixed_precision: off`` as False and ``weight_decay: 1e-4``
    as the string "1e-4"; both would be confusing type errors here.
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


@dataclass
class _Where:
    """Where each key's value came from, so errors can point at the line or the --set."""

    source: str
    lines: dict[str, int] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)

    def __call__(self, *keys: str) -> str:
        """The place of the first key given by --set, else of the first key in the file."""
        for key in keys:
            if key in self.sets:
                return f"--set {self.sets[key]}"
        for key in keys:
            if key in self.lines:
                return f"{self.source}:{self.lines[key]}"
        return self.source


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}",
                          hint="check the path; `resnet-builder config --show > my.yaml` "
                               "writes a full config to start from") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a folder, not a file: {path}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})",
                          hint="save the config as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None


def _yaml_error(err: yaml.MarkedYAMLError, source: str, text: str) -> ConfigError:
    """A YAML syntax error as file:line:column: problem, with the offending line as hint."""
    mark = err.problem_mark or err.context_mark
    problem = err.problem or err.context or "invalid YAML"
    if mark is None:
        return ConfigError(f"{source}: invalid YAML: {problem}")
    where = f"{source}:{mark.line + 1}:{mark.column + 1}"
    if err.context and err.context_mark and err.problem:
        problem += f" ({err.context} started on line {err.context_mark.line + 1})"
    lines = text.splitlines()
    shown = lines[mark.line].rstrip() if mark.line < len(lines) else ""
    hint = "indent with spaces (not tabs) and write `key: value` with a space after the colon"
    if shown:
        hint = f"line {mark.line + 1} reads {shown.strip()!r}; {hint}"
    return ConfigError(f"{where}: invalid YAML: {problem}", hint=hint)


def _node_key(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "<complex key>"


def _remember(lines: dict[str, int], key: str, node: yaml.Node, source: str) -> None:
    """Record the line of a key; a key given twice is an error (YAML would keep only the last)."""
    line = node.start_mark.line + 1
    if key in lines:
        raise ConfigError(f"{source}:{line}: '{key}' is given twice (also on line {lines[key]})",
                          hint="YAML keeps only the last one; delete or merge the other")
    lines[key] = line


def _key_lines(root: yaml.Node, source: str) -> dict[str, int]:
    """1-based line of every section and key ('train', 'train.epochs'), from the node tree."""
    lines = {"<root>": root.start_mark.line + 1}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key_node, value_node in root.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        section = _node_key(key_node)
        _remember(lines, section, key_node, source)
        if isinstance(value_node, yaml.MappingNode):
            for sub_key, _ in value_node.value:
                if sub_key.tag != "tag:yaml.org,2002:merge":
                    _remember(lines, f"{section}.{_node_key(sub_key)}", sub_key, source)
    return lines


def _parse(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """The YAML document and the line of each key, from one parse."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        return loader.construct_document(root), _key_lines(root, source)
    except yaml.MarkedYAMLError as e:
        raise _yaml_error(e, source, text) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    finally:
        loader.dispose()


# ----------------------------------------------------------------------------- unknown keys


def _unknown_section(name: object, body: object, at: str) -> ConfigError:
    sections = list(key_specs())
    msg = f"{at}: '{name}' is not a section"
    home = _home_section(name) if not isinstance(body, dict) else None
    close = difflib.get_close_matches(str(name), sections, n=1)
    if home:
        msg += f"; did you mean {home}.{name}? (keys go inside their section)"
    elif close:
        msg += f"; did you mean '{close[0]}'?"
    return ConfigError(msg, hint="sections: " + ", ".join(sections))


def _unknown_key(section: str, key: object, at: str) -> ConfigError:
    keys = list(key_specs()[section])
    msg = f"{at}: '{key}' is not a key of {section}"
    home = _home_section(key, besides=section)
    close = difflib.get_close_matches(str(key), keys, n=1)
    if home:
        msg += f"; did you mean {home}.{key}?"
    elif close:
        msg += f"; did you mean '{close[0]}'?"
    return ConfigError(msg, hint=f"keys of {section}: " + ", ".join(keys))


def _sections(data: Any, where: _Where) -> dict[str, dict[str, Any]]:
    """Check the shape (mapping of known sections of known keys) and copy it; values unchecked."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where('<root>')}: a config must be a mapping of sections "
                          f"(model:, data:, train:, ...), got {_kind_of(data)}",
                          hint="`resnet-builder config --show` prints a full config")
    out: dict[str, dict[str, Any]] = {}
    for name, body in data.items():
        if name not in key_specs():
            raise _unknown_section(name, body, where(str(name)))
        if body is None:  # a section whose keys are all commented out
            body = {}
        if not isinstance(body, dict):
            first = next(iter(key_specs()[name].values()))
            raise ConfigError(f"{where(name)}: section {name} must be a mapping of key: value, "
                              f"got {_kind_of(body)} {_show(body)}",
                              hint=f"write it as\n    {name}:\n      {first.name}: "
                                   f"{_yaml_text(first.default)}")
        for key in body:
            if key not in key_specs()[name]:
                raise _unknown_key(name, key, where(f"{name}.{key}"))
        out[name] = dict(body)
    return out


# ----------------------------------------------------------------------------- --set overrides

_SET_HINT = ("write --set section.key=value, e.g. --set train.epochs=5 "
             "--set model.stackwise_blocks=[3,4,6,3] --set model.preset=null")


def _override_value(spec: KeySpec, raw: str, at: str) -> Any:
    """The value of a --set, read as YAML; string keys take the text as written unless null.

    Shell quoting makes YAML quoting awkward, so ``--set run.name=2024`` means the
    string "2024" rather than a type error.
    """
    text_only = all(t is str for t in spec.types)
    try:
        value = yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as e:
        if text_only:
            return raw.strip()
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{at}: cannot read {raw!r} as a YAML value: {problem}",
                          hint="values are YAML: 5, 0.1, true, null, [3, 4, 6, 3], "
                               "'quoted text'") from None
    if text_only and value is not None and not isinstance(value, str):
        return raw.strip()
    return value


def _apply_override(sections: dict[str, dict[str, Any]], text: str, where: _Where) -> None:
    """Apply one ``section.key=value`` on top of the file, remembering it for error messages."""
    at = f"--set {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{at}: expected section.key=value", hint=_SET_HINT)
    section, dot, name = key.partition(".")
    if not dot or "." in name:
        home = _home_section(key)
        extra = f"; did you mean {home}.{key}?" if home else ""
        raise ConfigError(f"{at}: '{key}' is not a section.key name{extra}", hint=_SET_HINT)
    if section not in key_specs():
        raise _unknown_section(section, {}, at)
    if name not in key_specs()[section]:
        raise _unknown_key(section, name, at)
    sections.setdefault(section, {})[name] = _override_value(key_specs()[section][name], raw, at)
    where.sets[key] = text


# ----------------------------------------------------------------------------- values


def _as_type(value: Any, typ: Any) -> tuple[bool, Any]:
    """(True, value converted to typ) when value is a typ; int is accepted (and converted)
    for float, bool is never an int, and floats must be finite."""
    if get_origin(typ) is list:
        return isinstance(value, list), value
    if typ is bool or isinstance(value, bool):
        return typ is bool and isinstance(value, bool), value
    if typ is float and isinstance(value, (int, float)):
        return math.isfinite(value), float(value)
    return isinstance(value, typ), value


def _type_error(spec: KeySpec, name: str, value: Any, at: str, wanted: str) -> ConfigError:
    hint = f"{spec.dotted} takes {_allowed(spec)} (default: {_yaml_text(spec.default)})"
    if isinstance(value, float) and not math.isfinite(value):
        wanted = "a finite number"
    elif isinstance(value, float) and value.is_integer():
        hint = f"write {int(value)}, without the decimal point; " + hint
    elif isinstance(value, str) and _looks_numeric(value):
        hint = "remove the quotes around the number; " + hint
    return ConfigError(f"{at}: {name} must be {wanted}, got {_show(value)} ({_kind_of(value)})",
                       hint=hint)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_scalar(spec: KeySpec, name: str, value: Any, at: str) -> None:
    """Choices and range of one typed value (as received); name is 'train.epochs' or 'x[2]'."""
    if spec.choices and value not in spec.choices:
        choices = _choices(spec)
        close = difflib.get_close_matches(value, [str(c) for c in spec.choices], n=1) \
            if isinstance(value, str) else []
        extra = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{at}: {name} must be one of {choices}; got {_show(value)}{extra}",
                          hint=f"{spec.dotted}: {spec.help}")
    below = spec.min is not None and value < spec.min
    above = spec.max is not None and value > spec.max
    if below or above:
        raise ConfigError(f"{at}: {name} must be {_range_words(spec)}, got {_show(value)}",
                          hint=f"{spec.dotted}: {spec.help}")


def _check_value(spec: KeySpec, value: Any, at: str) -> Any:
    """The value, typed and checked against the spec, or a ConfigError naming key and place."""
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"{at}: {spec.dotted} cannot be null",
                          hint=f"{spec.dotted} takes {_allowed(spec)} "
                               f"(default: {_yaml_text(spec.default)})")
    for typ in spec.types:
        ok, converted = _as_type(value, typ)
        if ok:
            break
    else:
        wanted = " or ".join(_type_words(t) for t in spec.types)
        raise _type_error(spec, spec.dotted, value, at, wanted)
    if get_origin(typ) is not list:
        _check_scalar(spec, spec.dotted, value, at)
        return converted
    item_type = get_args(typ)[0]
    items = []
    for i, item in enumerate(converted):
        name = f"{spec.dotted}[{i}]"
        ok, typed = _as_type(item, item_type)
        if not ok:
            raise _type_error(spec, name, item, at, _type_words(item_type))
        _check_scalar(spec, name, item, at)
        items.append(typed)
    return items


# ----------------------------------------------------------------------------- cross-key rules


def _rule_one_way_to_say_model(cfg: Config, where: _Where) -> None:
    """preset and stackwise_* both describe the whole network; depth yields to either."""
    m = cfg.model
    if m.preset is not None and any(getattr(m, k) is not None for k in STACKWISE):
        raise ConfigError(f"{where('model.preset', *(f'model.{k}' for k in STACKWISE))}: "
                          "model.preset and model.stackwise_* both say which network to "
                          "build; keep one",
                          hint="set model.preset: null to build from the stackwise_* lists, or "
                               "drop the stackwise_* keys to use the preset (model.depth is "
                               "ignored either way)")


def _rule_stackwise_together(cfg: Config, where: _Where) -> None:
    """filters, blocks and strides describe the stages together: all three, same length."""
    m = cfg.model
    given = [k for k in STACKWISE if getattr(m, k) is not None]
    if not given:
        return
    at = where(*(f"model.{k}" for k in given))
    example = ("e.g. stackwise_filters: [64, 128, 256, 512], stackwise_blocks: [3, 4, 6, 3], "
               "stackwise_strides: [1, 2, 2, 2]")
    if len(given) < len(STACKWISE):
        missing = [f"model.{k}" for k in STACKWISE if k not in given]
        raise ConfigError(f"{at}: model.{given[0]} is set but {' and '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not; give all three "
                          "(one entry per stage)", hint=example)
    lengths = [len(getattr(m, k)) for k in STACKWISE]
    if len(set(lengths)) != 1 or lengths[0] == 0:
        shown = ", ".join(f"{k} {n}" for k, n in zip(STACKWISE, lengths, strict=True))
        raise ConfigError(f"{at}: model.stackwise_* need one entry per stage, the same number "
                          f"in each; got lengths {shown}", hint=example)


_DEPTH_STEP = {"basic": 6, "basic_block": 6, "bottleneck": 9, "block": 9}


def _depth_fits(depth: int, step: int) -> bool:
    return depth >= step + 2 and (depth - 2) % step == 0


def _nearest_depths(depth: int, steps: Sequence[int]) -> list[int]:
    """The closest valid depth below and above, for the hint."""
    valid = {n * s + 2 for s in steps for n in range(1, (depth - 2) // s + 2)}
    below = [d for d in valid if d < depth]
    above = [d for d in valid if d > depth]
    return ([max(below)] if below else []) + ([min(above)] if above else [])


def _rule_depth(cfg: Config, where: _Where) -> None:
    """Without preset or stackwise lists, depth must be given and fit the block type."""
    m = cfg.model
    if m.preset is not None or any(getattr(m, k) is not None for k in STACKWISE):
        return
    at = where("model.depth", "model.block_type", "model.preset")
    if m.depth is None:
        raise ConfigError(f"{at}: model.depth is null and neither model.preset nor "
                          "model.stackwise_* is set; nothing says which network to build",
                          hint="set model.depth (e.g. 20, 56, 110, 164) or model.preset")
    steps = [_DEPTH_STEP[m.block_type]] if m.block_type else [6, 9]
    if any(_depth_fits(m.depth, s) for s in steps):
        return
    rules = {6: "6n+2 (basic blocks)", 9: "9n+2 (bottleneck blocks)"}
    said = " or ".join(rules[s] for s in steps)
    nearest = " or ".join(str(d) for d in _nearest_depths(m.depth, steps))
    kind = f"block_type {m.block_type}" if m.block_type else "any block type"
    raise ConfigError(f"{at}: model.depth {m.depth} does not fit {kind}: depth must be {said}, "
                      "n >= 1", hint=f"nearest valid depth: {nearest}")


def _rule_data_path(cfg: Config, where: _Where) -> None:
    """folder and npz have no built-in location."""
    d = cfg.data
    if d.source in ("folder", "npz") and not d.path:
        what = "the .npz file"
        if d.source == "folder":
            what = ("the image folder (train/ and val/ sub-folders of one folder per class, "
                    "or one folder per class and data.validation_split)")
        raise ConfigError(f"{where('data.source', 'data.path')}: data.source is {d.source} "
                          "but data.path is not set",
                          hint=f"set data.path to {what}, e.g. --set data.path=...")


_MILESTONE_EXAMPLE = {"epochs": "[30, 60, 80]", "iterations": "[32000, 48000]"}


def _rule_step_milestones(cfg: Config, where: _Where) -> None:
    """A step schedule without increasing milestones would never step, or step backwards."""
    s = cfg.schedule
    if s.type != "step":
        return
    if not s.milestones:
        raise ConfigError(f"{where('schedule.type', 'schedule.milestones')}: schedule.type is "
                          "step but schedule.milestones is empty",
                          hint=f"list where lr is multiplied by gamma, in {s.unit}, e.g. "
                               f"milestones: {_MILESTONE_EXAMPLE[s.unit]}")
    pairs = zip(s.milestones, s.milestones[1:], strict=False)
    if any(b <= a for a, b in pairs):
        raise ConfigError(f"{where('schedule.milestones')}: schedule.milestones must increase, "
                          f"got {_yaml_text(s.milestones)}",
                          hint="list each milestone once, smallest first")


def _rule_warmup_lr(cfg: Config, where: _Where) -> None:
    """Warm-up climbs to lr; starting above it is a typo (often a missing zero)."""
    s, lr = cfg.schedule, cfg.optim.lr
    if s.warmup > 0 and s.warmup_lr > lr:
        raise ConfigError(f"{where('schedule.warmup_lr', 'optim.lr', 'schedule.warmup')}: "
                          f"schedule.warmup_lr {_num(s.warmup_lr)} is above optim.lr "
                          f"{_num(lr)}", hint="warm-up starts at warmup_lr and goes to lr; "
                                              "lower schedule.warmup_lr or raise optim.lr")


def _rule_min_lr(cfg: Config, where: _Where) -> None:
    """The cosine floor must be below the peak."""
    s, lr = cfg.schedule, cfg.optim.lr
    if s.type == "cosine" and s.min_lr > lr:
        raise ConfigError(f"{where('schedule.min_lr', 'optim.lr')}: schedule.min_lr "
                          f"{_num(s.min_lr)} is above optim.lr {_num(lr)}",
                          hint="the cosine schedule decays from optim.lr down to min_lr")


def _rule_freeze_needs_weights(cfg: Config, where: _Where) -> None:
    """Freezing a randomly initialised backbone trains only the head on random features."""
    m = cfg.model
    if m.freeze_backbone_epochs > 0 and m.weights is None and m.preset is None:
        raise ConfigError(f"{where('model.freeze_backbone_epochs')}: "
                          "model.freeze_backbone_epochs needs trained weights to freeze, but "
                          "model.weights is not set",
                          hint="set model.weights (e.g. resnet50_v2_imagenet with "
                               "model.preset: resnet50_v2) or freeze_backbone_epochs: 0")


RULES = (_rule_one_way_to_say_model, _rule_stackwise_together, _rule_depth, _rule_data_path,
         _rule_step_milestones, _rule_warmup_lr, _rule_min_lr, _rule_freeze_needs_weights)


# ----------------------------------------------------------------------------- building


def _build(sections: dict[str, dict[str, Any]], where: _Where) -> Config:
    """Typed, checked Config from shape-checked sections; missing keys take defaults."""
    parts = {}
    for section, specs in key_specs().items():
        given = sections.get(section, {})
        values = {}
        for name, spec in specs.items():
            if name in given:
                values[name] = _check_value(spec, given[name], where(spec.dotted))
            else:
                default = spec.default
                values[name] = list(default) if isinstance(default, list) else default
        parts[section] = SECTION_CLASSES[section](**values)
    cfg = Config(**parts)
    for rule in RULES:
        rule(cfg, where)
    return cfg


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """The config of a YAML file (None: all defaults) with ``--set`` overrides, validated.

    Raises ConfigError, naming file:line or the --set, for anything that cannot be used.
    """
    if isinstance(overrides, str):  # one override, not a sequence of one-letter overrides
        overrides = (overrides,)
    if path is None:
        data, where = None, _Where("<defaults>")
    else:
        source = str(path)
        text = _read(path)
        data, lines = _parse(text, source)
        where = _Where(source, lines)
    sections = _sections(data, where)
    for text in overrides:
        _apply_override(sections, text, where)
    return _build(sections, where)


def config_from_dict(data: Any, source: str = "<dict>") -> Config:
    """A validated Config from plain data, e.g. a run folder's saved config.yaml."""
    where = _Where(source)
    return _build(_sections(data, where), where)


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dicts (lists copied), in schema order."""
    return dataclasses.asdict(cfg)


def validate_config(cfg: Config, source: str = "<config>") -> Config:
    """Check a Config built or changed in code; returns a checked copy."""
    return config_from_dict(config_to_dict(cfg), source)


# ----------------------------------------------------------------------------- writing


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, width=96, initial_indent=f"{indent}# ",
                         subsequent_indent=f"{indent}# ", break_on_hyphens=False)


def _section_doc(section: str) -> str:
    return (SECTION_CLASSES[section].__doc__ or section).strip()


def _render(data: dict[str, dict[str, Any]], *, comments: bool) -> list[str]:
    """YAML lines of a config in schema order, optionally with each key's help above it."""
    lines: list[str] = []
    for section, specs in key_specs().items():
        if comments:
            lines += ["", *_comment(_section_doc(section), "")]
        lines.append(f"{section}:")
        for name, spec in specs.items():
            if comments:
                lines += _comment(f"{spec.help} [{_allowed(spec)}]", "  ")
            lines.append(f"  {name}: {_yaml_text(data[section][name])}")
    return lines


def default_config_yaml() -> str:
    """The full default config with every key's help, for ``resnet-builder config --show``."""
    head = ["# resnet-builder training config: every key with its default.",
            "# Use: resnet-builder train --config this.yaml [--set section.key=value ...]",
            "# Keys left out of a config file take these defaults."]
    return "\n".join(head + _render(config_to_dict(Config()), comments=True)) + "\n"


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically so a crash never leaves half a file."""
    cfg = validate_config(cfg)
    path = Path(path)
    text = "\n".join(["# Resolved config written by resnet-builder; reload with --config.",
                      *_render(config_to_dict(cfg), comments=False)]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


# ----------------------------------------------------------------------------- docs


def describe_keys() -> list[tuple[str, str, str]]:
    """(dotted key, default as YAML, help with what is allowed) for every key."""
    return [(spec.dotted, _yaml_text(spec.default), f"{spec.help} Allowed: {_allowed(spec)}.")
            for specs in key_specs().values() for spec in specs.values()]


def markdown_table() -> str:
    """The key table for the README and ``train --help``, built from describe_keys()."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| Key | Default | Description |", "|---|---|---|"]
    rows += [f"| `{key}` | `{cell(default)}` | {cell(help)} |"
             for key, default, help in describe_keys()]
    return "\n".join(rows) + "\n"
