"""Choosing the ``tf.distribute`` strategy a run trains under.

``auto`` means mirrored when more than one GPU is visible, else the default
(single-device) strategy. The training step is written for any strategy, so
the same code runs on one CPU, several GPUs, several machines or a TPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from .errors import UserError


@dataclass
class StrategyInfo:
    strategy: tf.distribute.Strategy
    name: str  # the strategy that actually runs: none | mirrored | multi_worker | tpu
    replicas: int
    is_chief: bool = True


def make_strategy(name: str = "auto") -> StrategyInfo:
    """Create the strategy for ``distribute.strategy``; errors say what is missing."""
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
    if name == "none":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.NotFoundError) as exc:
            raise UserError(f"no TPU found ({exc})",
                            hint="use distribute.strategy: auto on machines without a TPU"
                            ) from None
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        raise UserError(f"unknown strategy {name!r}",
                        hint="use auto, none, mirrored, multi_worker or tpu")
    return StrategyInfo(strategy, name, strategy.num_replicas_in_sync)
