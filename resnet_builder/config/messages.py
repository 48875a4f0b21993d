"""The words config errors and docs share: values as YAML, kinds, ranges, places.

Error hints and the ``config --show`` comments say what a key allows in the
same words (``allowed``), and every error starts with the place a value came
from (``Where``): ``file:line`` or the ``--set`` that gave it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

import yaml

from resnet_builder.config.keys import KeySpec, Part, part_spec

# What our loader reads as numbers beyond PyYAML's YAML 1.1 rules (loading._Loader): decimal
# integers with leading zeros (0801), 0o17, and exponents without a dot (1e-4). A string
# that looks so is written quoted, or a run named 0801 came back as the integer 801.
YAML_INT = re.compile(r"^(?:[-+]?[0-9][0-9_]*|[-+]?0x[0-9a-fA-F][0-9a-fA-F_]*"
                      r"|[-+]?0o[0-7][0-7_]*)$")
YAML_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper with our loader's numbers quoted wherever a string sits (a
    mapping's keys too: data.class_weight {"0801": 2} came back as class 801)."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = None
    if not value.isprintable():
        style = '"'
    elif YAML_INT.match(value) or YAML_EXPONENT_FLOAT.match(value):
        style = "'"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def yaml_text(value: Any) -> str:
    """One value as one line of flow YAML that reads back as the same value anywhere."""
    text = yaml.dump([value], Dumper=_Dumper, default_flow_style=True, width=2**30,
                     allow_unicode=True)
    return text.strip()[1:-1]


def show(value: Any) -> str:
    """A received value as an error message shows it: strings quoted, the rest as YAML."""
    return repr(value) if isinstance(value, str) else yaml_text(value)


def kind_of(value: Any) -> str:
    """'an integer', 'a string', ... for the value a user wrote."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {int: "an integer", float: "a decimal number", str: "a string", list: "a list",
             dict: "a mapping"}
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)


def type_words(typ: Any) -> str:
    """'an integer', 'a list of integers', ... for a type a key accepts."""
    if get_origin(typ) is list:
        item = get_args(typ)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}[item]
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping"}[typ]


def num(x: float) -> str:
    """A number without a needless '.0'."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def range_words(spec: KeySpec) -> str:
    if spec.min is not None and spec.max is not None:
        return f"in [{num(spec.min)}, {num(spec.max)}]"
    if spec.min is not None:
        return f">= {num(spec.min)}"
    if spec.max is not None:
        return f"<= {num(spec.max)}"
    return ""


def choices_text(spec: KeySpec) -> str:
    return ", ".join(yaml_text(c) for c in spec.choices or ())


def allowed(spec: KeySpec) -> str:
    """What a key accepts, in words shared by error hints and the docs."""
    if spec.parts is not None:
        return _mapping_words(spec) + (", or null" if spec.nullable else "")
    if spec.choices:
        listed = any(get_origin(t) is list for t in spec.types)  # run.loggers: [csv]
        words = ("a list, each one of " if listed else "one of ") + choices_text(spec)
    else:
        words = " or ".join(type_words(t) for t in spec.types if not (spec.text and t is str))
        if rng := range_words(spec):
            words += " " + rng
        if spec.text:
            words += f" or {spec.text[1]}"
        if spec.length:
            words += f" ({spec.length} items)"
    return words + (", or null" if spec.nullable else "")


def _mapping_words(spec: KeySpec) -> str:
    """'one of balanced or a mapping {name: a number >= 0}', '{num_ops: ..., magnitude: ...}'."""
    if isinstance(spec.parts, Part):
        inner = allowed(part_spec(spec, "name", spec.parts)).removesuffix(", or null")
        words = f"a mapping {{name: {inner}}}"
    else:
        entries = []
        for name, part in (spec.parts or {}).items():
            inner = allowed(part_spec(spec, name, part)).removesuffix(", or null")
            entries.append(f"{name}: {inner} (default {yaml_text(part.default)})")
        words = "a mapping {" + "; ".join(entries) + "}"
    return f"{choices_text(spec)} or {words}" if spec.choices else words


def takes(spec: KeySpec) -> str:
    """'train.epochs takes an integer >= 1 (default: 15)', the hint of a wrong value."""
    return f"{spec.dotted} takes {allowed(spec)} (default: {yaml_text(spec.default)})"


@dataclass
class Where:
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
