"""The one translation of a config's model keys into ``build_model`` arguments.

The trainer and ``build --config`` both build the network a config describes;
both take their arguments from ``model_arguments`` so they cannot disagree.
Pure Python: the CLI can resolve the architecture before importing Keras.
"""

from __future__ import annotations

from typing import Any

from resnet_builder.config.schema import STACKWISE, Config, DataConfig


def _way(cfg: Config) -> dict[str, Any]:
    """The one way the config says which network to build, as the rules in rules.py read it."""
    m = cfg.model
    if m.preset is not None:
        return {"preset": m.preset}
    if m.stackwise_blocks is not None:
        return {name: list(getattr(m, name)) for name in STACKWISE}
    return {"depth": m.depth}


# model_arguments' keys that are the classifier's, not the backbone's: the rest are
# ``resolve_architecture``'s (the config's network rule and ``build --config`` split them so)
CLASSIFIER_ARGS = ("num_classes", "head", "dropout", "resize", "crop_pct", "task", "threshold")


# classes of the sources that fix them before any data is read
_SOURCE_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}


def source_class_count(data: DataConfig) -> int | None:
    """The class count the data gives ``model.num_classes: null`` when it is known without
    reading the data (``build --config`` builds what ``train`` would); None for a folder,
    CSV, npz or pack, whose classes only the data says."""
    if data.source == "synthetic":
        return data.synthetic_classes
    return _SOURCE_CLASSES.get(data.source)


def model_arguments(cfg: Config) -> dict[str, Any]:
    """Keyword arguments of ``resnet_builder.model.classifier.build_model`` the config decides.

    Exactly one of ``preset``, the three ``stackwise_*`` lists or ``depth``; then
    ``block_type``, ``stem_filters``, ``bn_momentum``, ``head``, ``dropout``,
    ``input_shape`` (``[image_size, image_size, channels]``), ``resize``, ``crop_pct``,
    ``task``, ``threshold`` (``predict.threshold``) and ``num_classes``
    when ``model.num_classes`` is set. Keys whose value is None are left out, so
    ``build_model``'s own defaults apply. What depends on the data (class count
    from the data, normalisation, class names) is the caller's to add.
    """
    m, d = cfg.model, cfg.data
    args = {**_way(cfg), "block_type": m.block_type, "stem_filters": m.stem_filters,
            "bn_momentum": m.bn_momentum, "head": m.head, "dropout": m.dropout,
            "input_shape": [d.image_size, d.image_size, d.channels],
            "num_classes": m.num_classes, "resize": d.resize, "crop_pct": d.crop_pct,
            "task": m.task, "threshold": cfg.predict.threshold}
    return {key: value for key, value in args.items() if value is not None}
