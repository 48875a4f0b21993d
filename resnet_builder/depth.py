"""Depth rules of the CIFAR-style ResNets (He et al. 2016): depth -> (block type, n).

A network of three stages with ``n`` units each has ``9n + 2`` weighted layers
when its units are bottlenecks (three convolutions) and ``6n + 2`` when they
are basic units (two convolutions); the ``+ 2`` are the stem convolution and
the classifier. Some depths (20, 56, 110, 164, ... every ``18k + 2``) fit both
rules; then the bottleneck rule wins unless the caller names a block type,
matching keras-cv's default ``block_type="block"`` and the tutorial's
``9n + 2``. Pure Python, so the CLI can check a depth before importing Keras.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from resnet_builder.errors import ArgumentError

BASIC = "basic_block"
BOTTLENECK = "block"

# Per-rule facts: layers per unit and the human names used in messages.
LAYERS_PER_UNIT = {BOTTLENECK: 9, BASIC: 6}
RULE_NAMES = {BOTTLENECK: "9n+2 (bottleneck units)", BASIC: "6n+2 (basic units)"}

# Every spelling a user may give for a block type, mapped to keras-cv's names; the CLI's
# and the config's choices are its keys.
BLOCK_TYPE_ALIASES = {
    "basic": BASIC,
    "bottleneck": BOTTLENECK,
    BASIC: BASIC,
    BOTTLENECK: BOTTLENECK,
}
# The deepest network built: He et al. trained 1,001 (ResNetV2) and 1,202 layers. Without a
# bound a typo such as 1000000001 grew in memory until killed, before any message.
MAX_DEPTH = 2000

# The paper's short word for each block type, as the CLI suggests it ("--block-type basic").
SHORT_NAMES = {name: alias for alias, name in BLOCK_TYPE_ALIASES.items() if alias != name}


def normalize_block_type(block_type: str) -> str:
    """Map ``basic``/``bottleneck`` (and keras-cv's names) to keras-cv's names."""
    key = str(block_type).strip().lower()
    if key not in BLOCK_TYPE_ALIASES:
        spellings = " or ".join(f"{name!r} (alias {short!r})"
                                for name, short in sorted(SHORT_NAMES.items()))
        raise ArgumentError(f"`block_type` must be one of {spellings}. "
                            f"Received: block_type={block_type!r}")
    return BLOCK_TYPE_ALIASES[key]


@dataclass(frozen=True)
class DepthRule:
    """What a depth resolves to: the block type, units per stage, and why."""

    depth: int
    block_type: str
    n: int
    also_fits: str | None  # the other block type when the depth fits both rules
    # the caller named the block type (build's summary says so); the same network either way
    asked: bool = field(default=False, compare=False)

    @property
    def rule(self) -> str:
        return RULE_NAMES[self.block_type]


def units_for(depth: int, block_type: str) -> int | None:
    """Units per stage for ``depth`` under one rule, or None when it does not fit."""
    per_unit = LAYERS_PER_UNIT[block_type]
    if depth < per_unit + 2 or (depth - 2) % per_unit:
        return None
    return (depth - 2) // per_unit


def nearest_valid(depth: int, block_type: str) -> tuple[int | None, int]:
    """The valid depths just below (None if there is none) and just above ``depth``."""
    per_unit = LAYERS_PER_UNIT[block_type]
    smallest = per_unit + 2
    if depth <= smallest:
        return None, smallest
    n_below = (depth - 3) // per_unit  # largest n with per_unit*n + 2 < depth
    below = per_unit * n_below + 2 if n_below >= 1 else None
    n_above = (depth - 2) // per_unit + 1
    return below, per_unit * n_above + 2


def _depth_error(depth: object, block_type: str | None) -> ArgumentError:
    rules = [block_type] if block_type else [BOTTLENECK, BASIC]
    lines = []
    for rule in rules:
        if isinstance(depth, int):
            below, above = nearest_valid(depth, rule)
            near = f"nearest: {below} and {above}" if below else f"smallest: {above}"
        else:
            near = f"smallest: {LAYERS_PER_UNIT[rule] + 2}"
        lines.append(f"{RULE_NAMES[rule]}: {near}")
    others = [r for r in (BOTTLENECK, BASIC) if r not in rules and isinstance(depth, int)
              and units_for(depth, r) is not None]
    lines += [f"{depth} fits {RULE_NAMES[r]}: ask for block type {SHORT_NAMES[r]}"
              for r in others]
    fits = " or ".join(RULE_NAMES[r] for r in rules)
    return ArgumentError(
        f"depth {depth!r} is not a valid ResNet depth: it must be {fits} with n >= 1 "
        f"({'; '.join(lines)})."
    )


def resolve_depth(depth: object, block_type: str | None = None) -> DepthRule:
    """Check ``depth`` against the rules and say which network it means.

    Raises ``ArgumentError`` (a ``ValueError``) naming both rules and the
    nearest valid depths when it fits neither (or not the requested block type).
    """
    if isinstance(depth, bool) or not isinstance(depth, int):
        try:
            depth = int(str(depth).strip())
        except ValueError:
            raise _depth_error(depth, None) from None
    if depth > MAX_DEPTH:
        raise ArgumentError(f"depth {depth} is deeper than the {MAX_DEPTH:,} layers resnet-builder "
                            f"builds (He et al. trained up to 1,202); choose a depth up to "
                            f"{MAX_DEPTH:,}.")
    wanted = normalize_block_type(block_type) if block_type else None
    fits = [bt for bt in (BOTTLENECK, BASIC) if units_for(depth, bt) is not None]
    if wanted:
        if wanted not in fits:
            raise _depth_error(depth, wanted)
        chosen = wanted
    elif fits:
        chosen = fits[0]
    else:
        raise _depth_error(depth, None)
    others = [bt for bt in fits if bt != chosen]
    return DepthRule(depth, chosen, units_for(depth, chosen), others[0] if others else None,
                     asked=wanted is not None)


def valid_depths(max_depth: int, block_type: str | None = None) -> list[DepthRule]:
    """Every valid depth up to ``max_depth`` (both rules unless one is named)."""
    rules = [normalize_block_type(block_type)] if block_type else [BOTTLENECK, BASIC]
    found = []
    for rule in rules:
        per_unit = LAYERS_PER_UNIT[rule]
        for n in range(1, (max_depth - 2) // per_unit + 1):
            d = per_unit * n + 2
            other = BASIC if rule == BOTTLENECK else BOTTLENECK
            found.append(DepthRule(d, rule, n, other if units_for(d, other) else None))
    return sorted(found, key=lambda r: (r.depth, r.block_type != BOTTLENECK))
