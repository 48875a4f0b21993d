"""Reading a config: a YAML file with the line of every key, plus ``--set`` overrides.

The YAML is read once into both the document and the line of each key, so
every later error can say ``file:line``; an override remembers its own text,
so errors caused by it point at the ``--set`` instead of the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from resnet_builder.config.checks import build, check_sections, unknown_key, unknown_section
from resnet_builder.config.messages import YAML_EXPONENT_FLOAT, YAML_INT, Where
from resnet_builder.config.schema import (
    Config,
    KeySpec,
    config_to_dict,
    home_section,
    key_specs,
)
from resnet_builder.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader reading YAML 1.2 style: only true/false are booleans, 1e-4 is a number, and
    integers are decimal (or 0x/0o).

    Plain PyYAML reads ``mixed_precision: off`` as False, ``weight_decay: 1e-4`` as the
    string "1e-4", ``epochs: 010`` as 8 (octal) and ``checkpoint_every: 1:30`` as 90 (base
    60); all would be confusing here.
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _INT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(_INT_TAG, YAML_INT, list("-+0123456789"))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """010 is ten (YAML 1.2), not eight; 0x1f and 0o17 keep their bases; 1_000 is 1000."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign, digits = (-1, text[1:]) if text[:1] == "-" else (1, text.lstrip("+"))
    try:
        return sign * int(digits, 0 if digits[:2].lower() in ("0x", "0o") else 10)
    except ValueError:  # an explicit !!int on something else
        raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not an integer",
                                                node.start_mark) from None


_Loader.add_constructor(_INT_TAG, _construct_int)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", YAML_EXPONENT_FLOAT,
                              list("-+0123456789."))


# ----------------------------------------------------------------------------- the file


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
        if key_node.tag == _MERGE_TAG:
            continue
        section = _node_key(key_node)
        _remember(lines, section, key_node, source)
        if isinstance(value_node, yaml.MappingNode):
            for sub_key, _ in value_node.value:
                if sub_key.tag != _MERGE_TAG:
                    _remember(lines, f"{section}.{_node_key(sub_key)}", sub_key, source)
    return lines


def _parse(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """The YAML document and the line of each key, from one parse."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        lines = _key_lines(root, source)  # first: constructing merges << keys into the tree
        return loader.construct_document(root), lines
    except yaml.MarkedYAMLError as e:
        raise _yaml_error(e, source, text) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    finally:
        loader.dispose()


# ----------------------------------------------------------------------------- --set overrides

_SET_HINT = ("write --set section.key=value, e.g. --set train.epochs=5 "
             "--set model.stackwise_blocks=[3,4,6,3] --set model.preset=null")


def _override_value(spec: KeySpec, raw: str, at: str) -> Any:
    """The value of a --set, read as YAML; string keys take the text as written.

    Shell quoting makes YAML quoting awkward, so ``--set run.name=2024`` means the
    string "2024" rather than a type error, and ``data.path=/data/set #1`` keeps its
    ``#1`` (YAML reads a comment). Only text quoted YAML's way (``'a b'``) and, where the key
    may be null, null (``null``, ``~``, nothing) are read as YAML there: ``run.project=~``
    is the home folder.
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
    if not text_only:
        return value
    text = raw.strip()
    if (text in _NULLS and spec.nullable) or (text[:1] in "'\"" and isinstance(value, str)):
        return value
    return text


_NULLS = ("", "~", "null", "Null", "NULL")  # YAML's nulls


def _apply_override(sections: dict[str, dict[str, Any]], text: str, where: Where) -> None:
    """Apply one ``section.key=value`` on top of the file, remembering it for error messages."""
    at = f"--set {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{at}: expected section.key=value", hint=_SET_HINT)
    section, dot, name = key.partition(".")
    if not dot or "." in name:
        home = home_section(key)
        extra = f"; did you mean {home}.{key}?" if home else ""
        raise ConfigError(f"{at}: '{key}' is not a section.key name{extra}", hint=_SET_HINT)
    if section not in key_specs():
        raise unknown_section(section, {}, at)
    if name not in key_specs()[section]:
        raise unknown_key(section, name, at)
    sections.setdefault(section, {})[name] = _override_value(key_specs()[section][name], raw, at)
    where.sets[key] = text


# ----------------------------------------------------------------------------- the entry point


def _with_overrides(sections: dict[str, dict[str, Any]], overrides: Sequence[str],
                    where: Where, network: bool = True) -> Config:
    """Apply the ``--set`` overrides in order (a later one wins), then check and build."""
    for text in override_list(overrides):
        _apply_override(sections, text, where)
    return build(sections, where, network)


def override_list(overrides: Sequence[str] | str | None) -> tuple[str, ...]:
    """``--set`` strings as a tuple: one string is one override (not one per letter)."""
    if overrides is None:
        return ()
    if isinstance(overrides, str):
        return (overrides,)
    if not isinstance(overrides, Iterable) or not all(isinstance(o, str) for o in overrides):
        raise TypeError(f"overrides must be 'section.key=value' strings, e.g. "
                        f"['train.epochs=2'], got {overrides!r}")
    return tuple(overrides)


def load_config(path: str | Path | Mapping[str, Any] | None,
                overrides: Sequence[str] = (), *, network: bool = True) -> Config:
    """The config of a YAML file (None: all defaults; a dict: its sections, as the YAML
    would give them) with ``--set`` overrides, validated (``network`` False: all but
    whether its network builds, for a caller that replaces the network).

    Raises ConfigError, naming file:line or the --set, for anything that cannot be used.
    """
    if path is None:
        data, where = None, Where("<defaults>")
    elif isinstance(path, Mapping):
        data, where = dict(path), Where("<dict>")
    elif not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a config is a Config, a YAML path or a dict of sections, got "
                        f"{type(path).__name__}")
    else:
        source = str(path)
        data, lines = _parse(_read(path), source)
        where = Where(source, lines)
    return _with_overrides(check_sections(data, where), overrides, where, network)


def apply_overrides(cfg: Config, overrides: Sequence[str] = (),
                    source: str = "<config>") -> Config:
    """A checked copy of a Config (loaded or built in code) with ``--set`` overrides on top."""
    where = Where(source)
    return _with_overrides(check_sections(config_to_dict(cfg), where), overrides, where)
