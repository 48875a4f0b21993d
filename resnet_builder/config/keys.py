"""How a config key is declared and read back: ``declare`` (a dataclass field carrying the
facts) and ``KeySpec`` (those facts, read once), shared by validation, docs and errors."""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin


@dataclass(frozen=True)
class Part:
    """One entry of a mapping-valued key, e.g. ``num_ops`` of ``augment.rand_augment``."""

    types: tuple[Any, ...]
    default: Any = None
    min: float | None = None
    max: float | None = None
    length: int | None = None  # a list entry must have exactly this many items


def declare(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
         max: float | None = None, nullable: bool = False, types: tuple | None = None,
         text: tuple[str, str] | None = None, length: int | None = None,
         parts: dict[str, Part] | Part | None = None) -> Any:
    r"""A dataclass field with the facts validation and docs need.

    ``text``: for a number key that also takes words, (regex, the words for messages),
    e.g. ``("auto", "auto")`` or ``(DURATION, "a time such as '10min', ...")``.
    ``length``: a list key must have exactly this many items.
    ``parts``: for a key that takes a mapping, its entries by name (missing ones take their
    defaults), or one ``Part`` that every entry of a free-keyed mapping follows.
    """
    meta = {"help": help, "choices": choices, "min": min, "max": max, "nullable": nullable,
            "types": types, "text": text, "length": length, "parts": parts}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class KeySpec:
    """Everything known about one key, read once from its dataclass field."""

    section: str
    name: str
    types: tuple[Any, ...]  # accepted Python types: bool, int, float, str, list[...] or dict
    default: Any
    help: str
    choices: tuple | None
    min: float | None
    max: float | None
    nullable: bool
    text: tuple[str, str] | None = None  # (regex, words) of the strings a number key takes
    length: int | None = None  # exact item count of a list key
    parts: dict[str, Part] | Part | None = None  # entries of a mapping key (see _key)

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


def part_spec(spec: KeySpec, name: str, part: Part) -> KeySpec:
    """One entry of a mapping key as a key of its own, so it is checked and described alike."""
    return KeySpec(spec.dotted, name, part.types, part.default, spec.help, None, part.min,
                   part.max, False, None, part.length)


def _accepted_types(annotation: Any, override: tuple | None) -> tuple[Any, ...]:
    """The types a key takes: the field's ``types`` metadata, else its annotation minus None."""
    if override:
        return tuple(override)
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(a for a in get_args(annotation) if a is not type(None))
    return (annotation,)


def read_spec(section: str, f: dataclasses.Field, annotation: Any) -> KeySpec:
    """The facts ``declare`` put on a dataclass field, as a KeySpec."""
    meta = f.metadata
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return KeySpec(section, f.name, _accepted_types(annotation, meta.get("types")), default,
                   meta["help"], meta.get("choices"), meta.get("min"), meta.get("max"),
                   bool(meta.get("nullable")), meta.get("text"), meta.get("length"),
                   meta.get("parts"))


