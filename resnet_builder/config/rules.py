"""Cross-key rules: values that are fine alone but contradict each other.

Each rule gets a typed, range-checked ``Config`` and the ``Where`` of its
keys, and raises a ``ConfigError`` that points at the key the user most likely
has to change. The depth rule asks ``resnet_builder.depth``, the one owner of
the 9n+2 / 6n+2 rules.
"""

from __future__ import annotations

from collections.abc import Callable

from resnet_builder.config.messages import Where, num, yaml_text
from resnet_builder.config.model_args import CLASSIFIER_ARGS, model_arguments
from resnet_builder.config.schema import STACKWISE, Config
from resnet_builder.depth import resolve_depth
from resnet_builder.errors import ArgumentError, ConfigError
from resnet_builder.runs import is_folder_name


def _rule_one_way_to_say_model(cfg: Config, where: Where) -> None:
    """preset and stackwise_* both describe the whole network; depth yields to either."""
    m = cfg.model
    if m.preset is not None and any(getattr(m, k) is not None for k in STACKWISE):
        raise ConfigError(f"{where('model.preset', *(f'model.{k}' for k in STACKWISE))}: "
                          "model.preset and model.stackwise_* both say which network to "
                          "build; keep one",
                          hint="set model.preset: null to build from the stackwise_* lists, or "
                               "drop the stackwise_* keys to use the preset (model.depth is "
                               "ignored either way)")


def _rule_stackwise_together(cfg: Config, where: Where) -> None:
    """filters, blocks and strides describe the stages together: all three, same length."""
    m = cfg.model
    given = [k for k in STACKWISE if getattr(m, k) is not None]
    if not given:
        return
    at = where(*(f"model.{k}" for k in given))
    example = ("e.g. stackwise_filters: [64, 128, 256, 512], stackwise_blocks: [3, 4, 6, 3], "
               "stackwise_strides: [1, 2, 2, 2]")
    if len(given) < len(STACKWISE):
        missing = [f"model.{k}" for k in STACKWISE if k not in given]
        raise ConfigError(f"{at}: model.{given[0]} is set but {' and '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not; give all three "
                          "(one entry per stage)", hint=example)
    lengths = [len(getattr(m, k)) for k in STACKWISE]
    if len(set(lengths)) != 1 or lengths[0] == 0:
        shown = ", ".join(f"{k} {n}" for k, n in zip(STACKWISE, lengths, strict=True))
        raise ConfigError(f"{at}: model.stackwise_* need one entry per stage, the same number "
                          f"in each; got lengths {shown}", hint=example)


def _rule_depth(cfg: Config, where: Where) -> None:
    """Without preset or stackwise lists, depth must be given and fit the block type
    (depth.py's rule and its message, with the place in the file)."""
    m = cfg.model
    if m.preset is not None or any(getattr(m, k) is not None for k in STACKWISE):
        return
    at = where("model.depth", "model.block_type", "model.preset")
    if m.depth is None:
        raise ConfigError(f"{at}: model.depth is null and neither model.preset nor "
                          "model.stackwise_* is set; nothing says which network to build",
                          hint="set model.depth (e.g. 20, 56, 110, 164) or model.preset")
    try:
        resolve_depth(m.depth, m.block_type)
    except ArgumentError as exc:
        fix = "model.depth" + (" or model.block_type" if m.block_type else "")
        raise ConfigError(f"{at}: model.{exc}", hint=f"change {fix}; `resnet-builder depths` "
                          "lists every valid depth") from None


def _rule_network_builds(cfg: Config, where: Where) -> None:
    """The network the model keys describe can be built: an unknown preset, stages that
    downsample an image_size input to nothing, a preset named in model.weights that has no
    weights. Pure Python (``model.architecture``, ``model.presets``): caught by ``config``
    and before ``train`` makes its run folder, not after the data has loaded."""
    from resnet_builder.model.architecture import resolve_architecture
    from resnet_builder.model.presets import PRESETS, presets_with_weights

    m = cfg.model
    arguments = {k: v for k, v in model_arguments(cfg).items() if k not in CLASSIFIER_ARGS}
    try:
        plan, _ = resolve_architecture(**arguments).plan()  # ~1 ms (ResNet-1001: 14 ms)
    except ArgumentError as exc:
        keys = [f"model.{k}" for k in ("preset", *STACKWISE, "depth", "stem_filters")]
        if "input_shape" in str(exc):  # the input is data.image_size square
            keys, hint = ["data.image_size", *keys], (
                "the input is data.image_size x data.image_size x data.channels: raise "
                "data.image_size, or build a network that downsamples less")
        else:
            hint = ("`resnet-builder presets` lists the presets; `resnet-builder build "
                    "--config FILE` shows the network a config builds")
        raise ConfigError(f"{where(*keys)}: {exc}", hint=hint) from None
    h = cfg.hardware
    if h.deterministic and h.xla and any(op.kind == "max_pool" for op in plan.ops):
        raise ConfigError(f"{where('hardware.deterministic', 'hardware.xla')}: this network's "
                          "max-pool (the ImageNet stem, or a narrow strided projection) has no "
                          "deterministic XLA gradient, so hardware.deterministic cannot be kept "
                          "with hardware.xla", hint="set one of them to false")
    if m.weights in PRESETS and m.weights not in presets_with_weights():
        raise ConfigError(f"{where('model.weights')}: model.weights {m.weights!r} is a preset "
                          "without pretrained weights",
                          hint=f"presets with weights: {', '.join(presets_with_weights())}; "
                               "or give a .keras / .weights.h5 file")


# The sources without a built-in location, and what their data.path names.
_DATA_PATH_NAMES = {
    "folder": "the image folder (train/ and val/ sub-folders of one folder per class, or one "
              "folder per class and data.validation_split)",
    "npz": "the .npz file",
    "csv": "the CSV file (a path column and labels)",
    "tfrecord": "the folder `resnet-builder pack FOLDER OUT` wrote (OUT)",
}


def _rule_data_path(cfg: Config, where: Where) -> None:
    """folder, npz, csv and tfrecord have no built-in location: caught here, not at train."""
    d = cfg.data
    if d.source in _DATA_PATH_NAMES and not d.path:
        what = _DATA_PATH_NAMES[d.source]
        raise ConfigError(f"{where('data.source', 'data.path')}: data.source is {d.source} "
                          "but data.path is not set",
                          hint=f"set data.path to {what}, e.g. --set data.path=...")


_MILESTONE_EXAMPLE = {"epochs": "[30, 60, 80]", "iterations": "[32000, 48000]"}


def _rule_step_milestones(cfg: Config, where: Where) -> None:
    """A step schedule without increasing milestones would never step, or step backwards."""
    s = cfg.schedule
    if s.type != "step":
        return
    if not s.milestones:
        raise ConfigError(f"{where('schedule.type', 'schedule.milestones')}: schedule.type is "
                          "step but schedule.milestones is empty",
                          hint=f"list where lr is multiplied by gamma, in {s.unit}, e.g. "
                               f"milestones: {_MILESTONE_EXAMPLE[s.unit]}")
    pairs = zip(s.milestones, s.milestones[1:], strict=False)
    if any(b <= a for a, b in pairs):
        raise ConfigError(f"{where('schedule.milestones')}: schedule.milestones must increase, "
                          f"got {yaml_text(s.milestones)}",
                          hint="list each milestone once, smallest first")


def _rule_warmup_lr(cfg: Config, where: Where) -> None:
    """Warm-up climbs to lr; starting above it is a typo (often a missing zero)."""
    s, lr = cfg.schedule, cfg.optim.lr
    if s.warmup > 0 and s.warmup_lr > lr:
        raise ConfigError(f"{where('schedule.warmup_lr', 'optim.lr', 'schedule.warmup')}: "
                          f"schedule.warmup_lr {num(s.warmup_lr)} is above optim.lr "
                          f"{num(lr)}", hint="warm-up starts at warmup_lr and goes to lr; "
                                             "lower schedule.warmup_lr or raise optim.lr")


def _rule_min_lr(cfg: Config, where: Where) -> None:
    """The cosine floor must be below the peak."""
    s, lr = cfg.schedule, cfg.optim.lr
    if s.type == "cosine" and s.min_lr > lr:
        raise ConfigError(f"{where('schedule.min_lr', 'optim.lr')}: schedule.min_lr "
                          f"{num(s.min_lr)} is above optim.lr {num(lr)}",
                          hint="the cosine schedule decays from optim.lr down to min_lr")


def _rule_run_name_is_a_folder_name(cfg: Config, where: Where) -> None:
    """run.name names one folder under run.project: "a/b" failed when the folder was made
    (a bug report, not a message), "" numbered runs 2, 3, ... and "../x" left the project."""
    name = cfg.run.name
    if not is_folder_name(name):
        raise ConfigError(f"{where('run.name')}: run.name {name!r} is not a folder name",
                          hint="give a plain name such as exp or cifar-56; put the folders "
                               "above it in run.project")


def _rule_freeze_needs_weights(cfg: Config, where: Where) -> None:
    """Freezing a randomly initialised backbone trains only the head on random features; a
    preset alone is an architecture (its weights come only through model.weights)."""
    m = cfg.model
    if m.freeze_backbone_epochs > 0 and m.weights is None:
        raise ConfigError(f"{where('model.freeze_backbone_epochs')}: "
                          "model.freeze_backbone_epochs needs trained weights to freeze, but "
                          "model.weights is not set",
                          hint="set model.weights (e.g. resnet50_v2_imagenet, with "
                               "model.preset: resnet50_v2_imagenet, the network it was "
                               "trained in) or freeze_backbone_epochs: 0")


def _rule_crop_ranges(cfg: Config, where: Where) -> None:
    """random_resized_crop's scale and ratio are [low, high] ranges: low first, no empty box."""
    crop = cfg.augment.random_resized_crop
    if crop is None:
        return
    for name in ("scale", "ratio"):
        low, high = crop[name]
        if low > high or high <= 0:
            raise ConfigError(f"{where('augment.random_resized_crop')}: "
                              f"augment.random_resized_crop.{name} must be [low, high] with "
                              f"0 < high and low <= high, got {yaml_text([low, high])}",
                              hint="e.g. {scale: [0.08, 1.0], ratio: [0.75, 1.3333]}")


def _rule_colour_needs_colour(cfg: Config, where: Where) -> None:
    """Saturation and hue jitter have nothing to change in a one-channel image."""
    jitter = cfg.augment.color_jitter
    if cfg.data.channels == 1 and jitter and (jitter[2] or jitter[3]):
        raise ConfigError(f"{where('augment.color_jitter', 'data.channels')}: "
                          "augment.color_jitter changes saturation and hue "
                          f"({num(jitter[2])}, {num(jitter[3])}), which grayscale images "
                          "(data.channels: 1) do not have",
                          hint=f"use color_jitter: [{num(jitter[0])}, {num(jitter[1])}, 0, 0] "
                               "(brightness and contrast only) or data.channels: 3")


MULTILABEL_MONITORS = ("val_map", "val_macro_f1", "val_loss")


def _rule_multilabel(cfg: Config, where: Where) -> None:
    """A multilabel run reads its labels from a CSV, has no accuracy to monitor, and has no
    single class per image to balance, weigh or mix by."""
    multilabel, d, a = cfg.model.task == "multilabel", cfg.data, cfg.augment
    monitor = cfg.train.monitor
    if not multilabel:
        if monitor == "val_map":
            raise ConfigError(f"{where('train.monitor', 'model.task')}: train.monitor val_map "
                              "is a multilabel score, but model.task is multiclass",
                              hint="use val_accuracy, val_balanced_accuracy, val_macro_f1 or "
                                   "val_loss, or set model.task: multilabel")
        return
    at = where("model.task")
    if d.source != "csv":
        raise ConfigError(f"{where('data.source', 'model.task')}: model.task multilabel needs "
                          f"labels per image from a CSV, but data.source is {d.source}",
                          hint="set data.source: csv and data.path to a CSV with a path column "
                               "and labels ('a;b' or one 0/1 column per class)")
    if monitor not in MULTILABEL_MONITORS:
        raise ConfigError(f"{where('train.monitor', 'model.task')}: train.monitor {monitor} "
                          "is a multiclass score; a multilabel run reports val_map, "
                          "val_micro_f1 and val_macro_f1",
                          hint=f"set train.monitor to one of: {', '.join(MULTILABEL_MONITORS)}")
    refused = [(key, value) for key, value in (
        ("data.class_weight", d.class_weight), ("data.sampler", d.sampler != "uniform"),
        ("augment.mixup", a.mixup), ("augment.cutmix", a.cutmix)) if value]
    if refused:
        key = refused[0][0]
        raise ConfigError(f"{where(key, 'model.task')}: {key} works with one class per image "
                          f"and is not supported with model.task multilabel ({at})",
                          hint=f"leave {key} at its default for a multilabel run")


RULES: tuple[Callable[[Config, Where], None], ...] = (
    _rule_one_way_to_say_model, _rule_stackwise_together, _rule_depth,
    _rule_network_builds, _rule_data_path,
    _rule_step_milestones, _rule_warmup_lr, _rule_min_lr, _rule_run_name_is_a_folder_name,
    _rule_freeze_needs_weights,
    _rule_crop_ranges, _rule_colour_needs_colour, _rule_multilabel)


def check_rules(cfg: Config, where: Where, network: bool = True) -> None:
    """Apply every cross-key rule in order; the first one broken raises. ``network``
    False leaves out whether the network builds (``build --config`` with a network or
    input shape on the command line, which replaces the config's)."""
    for rule in RULES:
        if network or rule is not _rule_network_builds:
            rule(cfg, where)
