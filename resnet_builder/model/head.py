"""The classifier head, described once as plain data: the layers after the backbone.

``head_layers`` lists the head's layers as ``Op`` records (name, kind,
arguments, weights), the same records the backbone's ``Plan`` holds. The
classifier makes its Keras layers from them, the fast ``.keras`` writer writes
their weights, and the summary counts their parameters and multiply-adds, so
the head's shape is said in this one place. No Keras here.
"""

from __future__ import annotations

from resnet_builder.model.plan import BN_WEIGHTS, Op

HEADS = ("gap", "tutorial")
HEAD_WIDTH = 512  # the tutorial head's hidden Dense layer
TUTORIAL_DROPOUT = 0.5  # the tutorial head's dropout when none is asked for


def _dense(name: str, source: str, in_units: int, units: int, **args: object) -> Op:
    weights = (("kernel", (in_units, units)), ("bias", (units,)))
    return Op(name, "dense", (source,), {"units": units, **args}, (units,), weights,
              macs=in_units * units)


def head_layers(in_channels: int, num_classes: int, head: str = "gap",
                dropout: float = 0.0, source: str = "backbone",
                task: str = "multiclass") -> list[Op]:
    """The head's layers in call order, reading the backbone's output ``source``.

    ``head="gap"``: global average pooling, dropout when ``dropout`` > 0, the
    softmax Dense. ``head="tutorial"``: pooling, Dense(512, relu), batch norm,
    dropout (``dropout`` or 0.5), the softmax Dense. The softmax layer computes
    in float32, also under mixed precision. ``task="multilabel"``: the last Dense is a
    sigmoid (an independent probability per class) instead of the softmax.
    """
    layers = [Op("avg_pool", "gap", (source,), {}, (in_channels,))]
    width = in_channels
    if head == "tutorial":
        layers.append(_dense("fc1", "avg_pool", width, HEAD_WIDTH, activation="relu"))
        layers.append(Op("fc1_bn", "bn", ("fc1",), {}, (HEAD_WIDTH,),
                         tuple((w, (HEAD_WIDTH,)) for w in BN_WEIGHTS)))
        dropout, width = dropout or TUTORIAL_DROPOUT, HEAD_WIDTH
    if dropout:
        layers.append(Op("dropout", "dropout", (layers[-1].name,), {"rate": float(dropout)},
                         (width,)))
    activation = "sigmoid" if task == "multilabel" else "softmax"
    layers.append(_dense("predictions", layers[-1].name, width, num_classes,
                         activation=activation, dtype="float32"))
    return layers
