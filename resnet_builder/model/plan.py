"""A network as plain data: an ordered list of layer ops with shapes and weights.

The blocks describe a network once, into a ``Plan``; Keras layers are then
made from the plan (``backbone.py``), and the same plan answers questions
without Keras: parameter counts, multiply-adds, stage output sizes, and the
weight layout the fast ``.keras`` writer needs. So the CLI can check and
summarise a 3000-layer network in milliseconds, and one description serves
every use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

Shape = tuple[int | None, int | None, int]

BN_EPSILON = 1.001e-5  # keras-cv's (and keras.applications') batch-norm epsilon
# A batch norm's variables in the order Keras creates and saves them (trainable first).
BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclass(frozen=True)
class Op:
    """One layer: what it is, what it reads, what it makes."""

    name: str
    kind: str  # conv | bn | relu | max_pool | pad | add | rescaling; head: gap | dense | dropout
    inputs: tuple[str, ...]
    args: dict
    shape: tuple[int | None, ...]  # output (h, w, channels), None where open; head: (units,)
    weights: tuple[tuple[str, tuple[int, ...]], ...] = ()
    macs: int = 0  # multiply-adds per image (0 when the input size is open)

    @property
    def params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.weights)

    @property
    def trainable_params(self) -> int:
        return sum(math.prod(s) for w, s in self.weights if not w.startswith("moving_"))


def _out_size(size: int | None, kernel: int, stride: int, padding: str, dilation: int = 1):
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    return (size - dilation * (kernel - 1) - 1) // stride + 1


@dataclass
class Plan:
    """Records ops in the order they are made; each method returns the op's name."""

    input_shape: Shape
    bn_momentum: float = 0.99  # Keras' (and keras-cv's) default
    input_name: str = "input"
    ops: list[Op] = field(default_factory=list)
    _shapes: dict[str, Shape] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._shapes[self.input_name] = tuple(self.input_shape)

    def shape(self, name: str) -> Shape:
        return self._shapes[name]

    def _add(self, op: Op) -> str:
        if op.name in self._shapes:
            raise ValueError(f"duplicate layer name {op.name!r} in the plan")
        self.ops.append(op)
        self._shapes[op.name] = op.shape
        return op.name

    def conv(self, x: str, filters: int, kernel: int, *, name: str, strides: int = 1,
             padding: str = "valid", dilation: int = 1, use_bias: bool = True) -> str:
        h, w, c = self.shape(x)
        out = (_out_size(h, kernel, strides, padding, dilation),
               _out_size(w, kernel, strides, padding, dilation), filters)
        weights = [("kernel", (kernel, kernel, c, filters))]
        if use_bias:
            weights.append(("bias", (filters,)))
        macs = out[0] * out[1] * kernel * kernel * c * filters if out[0] and out[1] else 0
        args = {"filters": filters, "kernel_size": kernel, "strides": strides,
                "padding": padding, "dilation_rate": dilation, "use_bias": use_bias}
        return self._add(Op(name, "conv", (x,), args, out, tuple(weights), macs))

    def bn(self, x: str, *, name: str) -> str:
        c = self.shape(x)[2]
        weights = tuple((w, (c,)) for w in BN_WEIGHTS)
        args = {"axis": 3, "epsilon": BN_EPSILON, "momentum": self.bn_momentum}
        return self._add(Op(name, "bn", (x,), args, self.shape(x), weights))

    def relu(self, x: str, *, name: str) -> str:
        return self._add(Op(name, "relu", (x,), {"activation": "relu"}, self.shape(x)))

    def max_pool(self, x: str, pool: int, *, name: str, strides: int,
                 padding: str = "valid") -> str:
        h, w, c = self.shape(x)
        out = (_out_size(h, pool, strides, padding), _out_size(w, pool, strides, padding), c)
        args = {"pool_size": pool, "strides": strides, "padding": padding}
        return self._add(Op(name, "max_pool", (x,), args, out))

    def pad(self, x: str, amount: int, *, name: str) -> str:
        """``amount`` zeros on every side (keras.applications' explicit padding)."""
        h, w, c = self.shape(x)
        out = (None if h is None else h + 2 * amount, None if w is None else w + 2 * amount, c)
        return self._add(Op(name, "pad", (x,), {"padding": amount}, out))

    def add(self, a: str, b: str, *, name: str) -> str:
        sa, sb = self.shape(a), self.shape(b)
        if sa != sb:
            raise ValueError(f"cannot add {a} {sa} and {b} {sb} in {name}")
        return self._add(Op(name, "add", (a, b), {}, sa))

    def rescaling(self, x: str, scale: float, *, name: str, offset: float = 0.0) -> str:
        args = {"scale": scale, "offset": offset}
        return self._add(Op(name, "rescaling", (x,), args, self.shape(x)))

    @property
    def output(self) -> str:
        return self.ops[-1].name if self.ops else self.input_name

    @property
    def params(self) -> int:
        return sum(op.params for op in self.ops)

    @property
    def trainable_params(self) -> int:
        return sum(op.trainable_params for op in self.ops)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)
