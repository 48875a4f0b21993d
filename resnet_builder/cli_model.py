"""The options that name a network, shared by ``build`` and ``bench``, and the network
they resolve to (a YAML config's model section, overridden by what the command line gives).
"""

from __future__ import annotations

import click

from resnet_builder.config import key_specs
from resnet_builder.depth import BLOCK_TYPE_ALIASES

BLOCK_TYPES = tuple(BLOCK_TYPE_ALIASES)


def choices_of(dotted: str) -> tuple[str, ...]:
    """A config key's allowed values, for the flag that sets it (the config owns them)."""
    section, key = dotted.split(".")
    return tuple(key_specs()[section][key].choices)


def int_list(value: str | None, name: str) -> list[int] | None:
    """``3,4,6,3`` -> [3, 4, 6, 3]; a clear usage error otherwise."""
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",")]  # "1,,1": refused
    except ValueError:
        raise click.BadParameter(f"expected integers separated by commas, got {value!r}",
                                 param_hint=name) from None


MODEL_OPTIONS = [
    click.option("--depth", help="Depth: 9n+2 (bottleneck) or 6n+2 (basic), CIFAR-style network."),
    click.option("--preset", help="A named preset (see `resnet-builder presets`)."),
    click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
                 help="A YAML config; its model section (and data.image_size/channels) is used."),
    click.option("--blocks", help="Explicit blocks per stage, e.g. 3,4,6,3."),
    click.option("--filters", help="Explicit filters per stage, e.g. 64,128,256,512."),
    click.option("--strides", help="Explicit strides per stage, e.g. 1,2,2,2."),
    click.option("--dilations", help="Dilation per stage, e.g. 1,1,2,4 (default: none)."),
    click.option("--block-type",
                 type=click.Choice(BLOCK_TYPES),
                 help="Block type; default: bottleneck when the depth fits 9n+2, else basic."),
    click.option("--stem-filters", type=click.IntRange(min=1),
                 help="Stem width (depth networks: base width w of stages w/2w/4w; default 16)."),
    click.option("--num-classes", type=click.IntRange(min=1), help="Classes (default 10)."),
    click.option("--input-shape",
                 help="H,W,C (default 32,32,3 for depth networks and CIFAR presets, "
                      "else 224,224,3)."),
    click.option("--head", type=click.Choice(choices_of("model.head")), help="Classifier head."),
    click.option("--dropout", type=click.FloatRange(0.0, 0.99),
                 help="Dropout, 0 to 0.99 (as model.dropout)."),
]
WAYS = ("depth", "preset", "stackwise_blocks", "stackwise_filters", "stackwise_strides")
# A preset or stages given on the command line replace the config's whole network, its shape
# too (``--preset resnet50_v2`` kept a config's basic blocks and 16-filter stem); a --depth
# keeps them, as ``train --set model.depth=...`` does.
NETWORK_SHAPE = ("block_type", "stem_filters", "stackwise_dilations")


def model_options(command):
    """The options that say which network to build, shared by ``build`` and ``bench``."""
    for option in reversed(MODEL_OPTIONS):
        command = option(command)
    return command


def architecture_from_options(opts: dict, data_classes: bool = True) -> tuple:
    """(Architecture, {num_classes, head, dropout[, resize, crop_pct, task, threshold]}) from
    the model options. ``data_classes``: a config's ``num_classes: null`` is its data's class
    count (build); bench, on synthetic images, takes 10 where only the data says."""
    from resnet_builder.config.model_args import CLASSIFIER_ARGS
    from resnet_builder.model.architecture import resolve_architecture

    request = _model_request(opts["config_path"], classes_given=opts["num_classes"] is not None,
                             data_classes=data_classes)
    given = {"depth": opts["depth"], "preset": opts["preset"], "block_type": opts["block_type"],
             "stackwise_blocks": int_list(opts["blocks"], "--blocks"),
             "stackwise_filters": int_list(opts["filters"], "--filters"),
             "stackwise_strides": int_list(opts["strides"], "--strides"),
             "stackwise_dilations": int_list(opts["dilations"], "--dilations"),
             "stem_filters": opts["stem_filters"], "num_classes": opts["num_classes"],
             "head": opts["head"], "dropout": opts["dropout"],
             "input_shape": int_list(opts["input_shape"], "--input-shape")}
    if any(given[k] is not None for k in WAYS):  # a way given on the command line wins
        whole = given["depth"] is None  # a preset or stages: a whole network, not a depth
        for key in WAYS + (NETWORK_SHAPE if whole else ()):
            request.pop(key, None)
    request.update({k: v for k, v in given.items() if v is not None})
    if request.get("input_shape") is not None and len(request["input_shape"]) != 3:
        raise click.BadParameter("expected H,W,C", param_hint="--input-shape")
    model_args = {"num_classes": request.pop("num_classes", 10),
                  "head": request.pop("head", "gap"), "dropout": request.pop("dropout", 0.0),
                  **{k: request.pop(k) for k in CLASSIFIER_ARGS if k in request}}
    if model_args["num_classes"] < 2 and model_args.get("task", "multiclass") == "multiclass":
        raise click.BadParameter("a multiclass model needs at least 2 (a softmax over one class "
                                 "always outputs 1; one yes/no label is model.task multilabel)",
                                 param_hint="--num-classes")
    return resolve_architecture(**request), model_args


def _model_request(config_path: str | None, classes_given: bool, data_classes: bool) -> dict:
    """The model keys of a YAML config, as ``resolve_architecture`` arguments; its
    ``num_classes: null`` is the data's class count, as ``train`` takes it, where the source
    fixes it (else asked for, with ``data_classes``)."""
    if not config_path:
        return {}
    from resnet_builder.config import load_config, model_arguments
    from resnet_builder.config.model_args import source_class_count

    # the network is checked once the command line's options are applied (below)
    cfg = load_config(config_path, network=False)
    request = model_arguments(cfg)
    if "num_classes" not in request and not classes_given:
        count = source_class_count(cfg.data)
        if count is not None:
            request["num_classes"] = count
        elif data_classes:
            raise click.BadParameter(
                f"{config_path} leaves model.num_classes to its data (data.source: "
                f"{cfg.data.source}), which build does not read; pass the class count",
                param_hint="--num-classes")
    return request
