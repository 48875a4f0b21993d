"""Checking plain data against the schema: known keys, types, ranges, then the cross-key rules.

Every mistake becomes a ``ConfigError`` that names the key, where it was
written (``Where``) and what is allowed. ``build`` is the one path from
checked data to a ``Config``: files, ``--set``, saved run configs and configs
changed in code all go through it.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import replace
from typing import Any, get_args, get_origin

from resnet_builder.config.keys import Part, part_spec
from resnet_builder.config.messages import (
    Where,
    allowed,
    choices_text,
    kind_of,
    range_words,
    show,
    takes,
    type_words,
    yaml_text,
)
from resnet_builder.config.rules import check_rules
from resnet_builder.config.schema import (
    SECTION_CLASSES,
    Config,
    KeySpec,
    config_to_dict,
    home_section,
    key_specs,
)
from resnet_builder.errors import ConfigError

# ----------------------------------------------------------------------------- values


def _as_type(value: Any, typ: Any) -> tuple[bool, Any]:
    """(True, value converted to typ) when value is a typ; int is accepted (and converted)
    for float, bool is never an int, and floats must be finite."""
    if get_origin(typ) is list:
        return isinstance(value, list), value
    if typ is dict:
        return isinstance(value, dict), value
    if typ is bool or isinstance(value, bool):
        return typ is bool and isinstance(value, bool), value
    if typ is float and isinstance(value, (int, float)):
        return (True, float(value)) if _finite(value) else (False, value)
    return isinstance(value, typ), value


def _finite(value: float) -> bool:
    """math.isfinite, where an integer past float's range is not finite (it raised)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _looks_numeric(text: str) -> bool:
    """A finite number in quotes ("8"); float() also reads "inf" and "nan", words here."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _type_error(spec: KeySpec, name: str, value: Any, at: str, wanted: str) -> ConfigError:
    hint = takes(spec)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not _finite(value):
        wanted = "a finite number"
    elif isinstance(value, float) and value.is_integer() and int in spec.types:
        hint = f"write {int(value)}, without the decimal point; " + hint
    elif isinstance(value, str) and _looks_numeric(value):
        hint = "remove the quotes around the number; " + hint
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and str in spec.types:
        hint = "put it in quotes to give it as text; " + hint  # run.name: '2024'
    return ConfigError(f"{at}: {name} must be {wanted}, got {show(value)} ({kind_of(value)})",
                       hint=hint)


def _check_scalar(spec: KeySpec, name: str, value: Any, at: str) -> None:
    """Choices and range of one typed value (as received); name is 'train.epochs' or 'x[2]'."""
    if isinstance(value, str) and spec.text:
        if not re.fullmatch(spec.text[0], value):
            raise ConfigError(f"{at}: {name} must be {allowed(spec)}, got {show(value)}",
                              hint=f"{spec.dotted}: {spec.help}")
        return
    if spec.choices and value not in spec.choices:
        written = [yaml_text(c) for c in spec.choices]  # as a YAML file spells them
        close = difflib.get_close_matches(value, written, n=1) if isinstance(value, str) else []
        extra = f"; did you mean '{close[0]}'?" if close else ""
        if isinstance(value, str) and value in written:  # "true" quoted: a string, not true
            extra = f"; write {value} without quotes"
        wanted = allowed(spec) if spec.parts is not None else f"one of {choices_text(spec)}"
        raise ConfigError(f"{at}: {name} must be {wanted}; got {show(value)}{extra}",
                          hint=f"{spec.dotted}: {spec.help}")
    below = spec.min is not None and value < spec.min
    above = spec.max is not None and value > spec.max
    if below or above:
        hint = f"{spec.dotted}: {spec.help}"
        if spec.dotted == "hardware.seed" and above and value < 2**32:  # allowed before 2026-12
            hint = (f"seeds up to 2**32 - 1 were allowed and folded below 2**31: this one "
                    f"trained as {value % 2**31}; write that, the same split and order")
        raise ConfigError(f"{at}: {name} must be {range_words(spec)}, got {show(value)}",
                          hint=hint)


def _check_items(spec: KeySpec, item_type: Any, items: list, at: str) -> list:
    """Each entry of a list value, typed and checked; errors name the entry (``x[2]``)."""
    if spec.length is not None and len(items) != spec.length:
        raise ConfigError(f"{at}: {spec.dotted} must have {spec.length} items, got {len(items)}",
                          hint=takes(spec))
    typed_items = []
    for i, item in enumerate(items):
        name = f"{spec.dotted}[{i}]"
        ok, typed = _as_type(item, item_type)
        if not ok:
            raise _type_error(spec, name, item, at, type_words(item_type))
        _check_scalar(spec, name, item, at)
        typed_items.append(typed)
    return typed_items


def check_value(spec: KeySpec, value: Any, at: str) -> Any:
    """The value, typed and checked against the spec, or a ConfigError naming key and place."""
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"{at}: {spec.dotted} cannot be null", hint=takes(spec))
    for typ in spec.types:
        ok, converted = _as_type(value, typ)
        if ok:
            break
    else:
        wanted = " or ".join(type_words(t) for t in spec.types)
        raise _type_error(spec, spec.dotted, value, at, wanted)
    if get_origin(typ) is list:
        return _check_items(spec, get_args(typ)[0], converted, at)
    if typ is dict:
        return _check_mapping(spec, converted, at)
    _check_scalar(spec, spec.dotted, value, at)
    return converted


def _check_mapping(spec: KeySpec, value: dict, at: str) -> dict:
    """A mapping key's entries, each checked as a key of its own (``a.b.entry``).

    Named parts: unknown entries are refused, missing ones take their defaults. One
    ``Part``: any entry name (a string), each value following it.
    """
    if isinstance(spec.parts, Part):
        return {str(name): check_value(part_spec(spec, str(name), spec.parts), item, at)
                for name, item in value.items()}
    parts = spec.parts or {}
    for name in value:
        if name not in parts:
            close = difflib.get_close_matches(str(name), list(parts), n=1)
            extra = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{at}: '{name}' is not an entry of {spec.dotted}{extra}",
                              hint=takes(spec))
    return {name: check_value(part_spec(spec, name, part), value[name], at)
            if name in value else _copy(part.default) for name, part in parts.items()}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


# ----------------------------------------------------------------------------- unknown keys


def unknown_section(name: object, body: object, at: str) -> ConfigError:
    """'x' is not a section, with the closest section or the section that has key 'x'."""
    sections = list(key_specs())
    msg = f"{at}: '{name}' is not a section"
    home = home_section(name) if not isinstance(body, dict) else None
    close = difflib.get_close_matches(str(name), sections, n=1)
    if home:
        msg += f"; did you mean {home}.{name}? (keys go inside their section)"
    elif close:
        msg += f"; did you mean '{close[0]}'?"
    return ConfigError(msg, hint="sections: " + ", ".join(sections))


def unknown_key(section: str, key: object, at: str) -> ConfigError:
    """'x' is not a key of a section, with the closest key or the section that has it."""
    keys = list(key_specs()[section])
    msg = f"{at}: '{key}' is not a key of {section}"
    home = home_section(key, besides=section)
    close = difflib.get_close_matches(str(key), keys, n=1)
    if home:
        msg += f"; did you mean {home}.{key}?"
    elif close:
        msg += f"; did you mean '{close[0]}'?"
    return ConfigError(msg, hint=f"keys of {section}: " + ", ".join(keys))


def _section_body(name: str, body: Any, where: Where) -> dict[str, Any]:
    """One section's keys, checked to be known; values are checked later."""
    if body is None:  # a section whose keys are all commented out
        return {}
    if not isinstance(body, dict):
        first = next(iter(key_specs()[name].values()))
        raise ConfigError(f"{where(name)}: section {name} must be a mapping of key: value, "
                          f"got {kind_of(body)} {show(body)}",
                          hint=f"write it as\n    {name}:\n      {first.name}: "
                               f"{yaml_text(first.default)}")
    for key in body:
        if key not in key_specs()[name]:
            raise unknown_key(name, key, where(f"{name}.{key}"))
    return dict(body)


def check_sections(data: Any, where: Where) -> dict[str, dict[str, Any]]:
    """Check the shape (mapping of known sections of known keys) and copy it; values unchecked."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where('<root>')}: a config must be a mapping of sections "
                          f"(model:, data:, train:, ...), got {kind_of(data)}",
                          hint="`resnet-builder config --show` prints a full config")
    out: dict[str, dict[str, Any]] = {}
    for name, body in data.items():
        if name not in key_specs():
            raise unknown_section(name, body, where(str(name)))
        out[name] = _section_body(name, body, where)
    return out


# ----------------------------------------------------------------------------- building


def build(sections: dict[str, dict[str, Any]], where: Where, network: bool = True) -> Config:
    """Typed, checked Config from shape-checked sections; missing keys take defaults."""
    parts = {}
    for section, specs in key_specs().items():
        given = sections.get(section, {})
        values = {}
        for name, spec in specs.items():
            if name in given:
                values[name] = check_value(spec, given[name], where(spec.dotted))
            else:
                values[name] = _copy(spec.default)
        parts[section] = SECTION_CLASSES[section](**values)
    # ~ in a YAML file reaches no shell: run.project: ~/runs made a folder named "~" here
    # (data.path and model.weights are expanded where they are opened)
    parts["run"] = replace(parts["run"], project=os.path.expanduser(parts["run"].project))
    cfg = Config(**parts)
    check_rules(cfg, where, network)
    return cfg


def config_from_dict(data: Any, source: str = "<dict>") -> Config:
    """A validated Config from plain data, e.g. a run folder's saved config.yaml."""
    where = Where(source)
    return build(check_sections(data, where), where)


def validate_config(cfg: Config, source: str = "<config>") -> Config:
    """Check a Config built or changed in code; returns a checked copy."""
    return config_from_dict(config_to_dict(cfg), source)

