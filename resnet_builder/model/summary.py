"""What ``build`` reports: the rule, the stages, parameters and multiply-adds.

Everything comes from the ``Plan``, so the numbers are known before (and
without) building Keras layers; the tests check them against ``count_params``.
"""

from __future__ import annotations

import math
from typing import Any

from resnet_builder.depth import RULE_NAMES
from resnet_builder.model.architecture import Architecture, head_layers


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
    head_weights = [s for _, _, ws in head_layers(channels, num_classes, head) for _, s in ws]
    head_params = sum(math.prod(s) for s in head_weights)
    head_moving = 2 * 512 if head == "tutorial" else 0
    head_macs = sum(math.prod(s) for s in head_weights if len(s) == 2)
    total = plan.params + head_params
    trainable = plan.trainable_params + head_params - head_moving
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
        "stem": b["stem"],
        "stem_filters": b["stem_filters"],
        "stride_position": b["stride_position"],
        "input_shape": list(arch.input_shape),
        "num_classes": num_classes,
        "head": head,
        "stages": _stages(plan, pyramid, arch),
        "layers": len(plan.ops),
        "params_total": total,
        "params_trainable": trainable,
        "params_non_trainable": total - trainable,
        "backbone_params": plan.params,
        "macs_per_image": plan.macs + head_macs,
    }
