"""What ``build`` reports: the rule, the stages, parameters and multiply-adds.

Everything comes from the ``Plan`` and the head's description (``head.py``),
so the numbers are known before (and without) building Keras layers; the tests
check them against ``count_params``. ``format_summary`` is the terminal form.
"""

from __future__ import annotations

from typing import Any

from resnet_builder.depth import BASIC, BOTTLENECK, RULE_NAMES, SHORT_NAMES
from resnet_builder.model.architecture import Architecture
from resnet_builder.model.head import head_layers


def _stages(plan, pyramid: dict[str, str], arch: Architecture) -> list[dict[str, Any]]:
    b = arch.backbone
    rows = []
    for i, (level, name) in enumerate(pyramid.items()):
        h, w, c = plan.shape(name)
        rows.append({"stage": i + 1, "level": level, "filters": b["stackwise_filters"][i],
                     "out_channels": c, "blocks": b["stackwise_blocks"][i],
                     "stride": b["stackwise_strides"][i], "output_size": [h, w]})
    return rows


def model_summary(arch: Architecture, num_classes: int, head: str = "gap") -> dict[str, Any]:
    """A JSON-ready description of the classifier that ``build_model`` would make."""
    plan, pyramid = arch.plan()
    channels = plan.shape(plan.output)[2]
    head_ops = head_layers(channels, num_classes, head)
    total = plan.params + sum(op.params for op in head_ops)
    trainable = plan.trainable_params + sum(op.trainable_params for op in head_ops)
    rule = arch.depth_rule
    b = arch.backbone
    return {
        "source": arch.source,
        "preset": arch.preset,
        "depth": rule.depth if rule else None,
        "rule": RULE_NAMES[rule.block_type] if rule else None,
        "n": rule.n if rule else None,
        "also_fits": RULE_NAMES[rule.also_fits] if rule and rule.also_fits else None,
        "block_type": b["block_type"],
        "block_type_asked": rule.asked if rule else None,
        "stem": b["stem"],
        "stem_filters": b["stem_filters"],
        "stride_position": b["stride_position"],
        "padding": b["padding"],
        "input_shape": list(arch.input_shape),
        "num_classes": num_classes,
        "head": head,
        "stages": _stages(plan, pyramid, arch),
        "layers": len(plan.ops),
        "params_total": total,
        "params_trainable": trainable,
        "params_non_trainable": total - trainable,
        "backbone_params": plan.params,
        "macs_per_image": plan.macs + sum(op.macs for op in head_ops),
    }


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def _title(s: dict) -> list[str]:
    if s["source"] == "depth":
        if not s["also_fits"]:
            why = "the only rule that fits"
        elif s.get("block_type_asked") or s["block_type"] != BOTTLENECK:
            why = f"{SHORT_NAMES[s['block_type']]} block type asked for"
        else:  # the depth fits both rules and bottleneck won by default
            why = "default block type"
        lines = [f"ResNetV2-{s['depth']}: rule {s['rule']}, n={s['n']} ({why})"]
        if s["also_fits"]:
            other = SHORT_NAMES[BASIC if s["block_type"] == BOTTLENECK else BOTTLENECK]
            lines.append(f"  {s['depth']} also fits {s['also_fits']}: pass --block-type {other}")
        return lines
    if s["source"] == "preset":
        return [f"preset {s['preset']} (block type {s['block_type']})"]
    return [f"stackwise network (block type {s['block_type']})"]


def format_summary(s: dict) -> str:
    """The terminal form of ``model_summary`` plus what ``build`` added (files, note, time)."""
    lines = _title(s)
    h, w, c = s["input_shape"]
    lines.append(f"input {h}x{w}x{c}, {s['stem']} stem with {s['stem_filters']} filters, "
                 f"stride in the {s['stride_position']} unit of each stage, "
                 + ("" if s["padding"] == "same" else f"{s['padding']} padding, ")
                 + f"{s['layers']} layers")
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
    for key, label in (("output", "wrote"), ("plot", "drew"), ("note", "note:")):
        if s.get(key):
            lines.append(f"{label} {s[key]}")
    lines.append(f"done in {s['build_seconds']:.2f} s")
    return "\n".join(lines)
