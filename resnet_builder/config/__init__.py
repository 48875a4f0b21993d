"""The training config: schema, loading (YAML + ``--set``), checks and rendering.

``schema`` holds every key with its default, type, range and help;
``loading`` reads a YAML file (remembering each key's line) and ``--set``
overrides; ``checks`` and ``rules`` turn plain data into a checked ``Config``
or a ``ConfigError`` that names the key and where it was written;
``rendering`` writes configs and the key table; ``model_args`` says what a
config asks ``build_model`` for.

Pure Python + PyYAML: the CLI validates a config before it pays for importing
TensorFlow.
"""

from __future__ import annotations

from resnet_builder.config.checks import config_from_dict, validate_config
from resnet_builder.config.loading import apply_overrides, load_config, override_list
from resnet_builder.config.model_args import model_arguments
from resnet_builder.config.rendering import (
    config_yaml,
    default_config_yaml,
    describe_keys,
    dump_config,
    markdown_table,
)
from resnet_builder.config.schema import (
    AugmentConfig,
    Config,
    DataConfig,
    DistributeConfig,
    HardwareConfig,
    KeySpec,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    config_to_dict,
    key_specs,
)

__all__ = [
    "AugmentConfig",
    "Config",
    "DataConfig",
    "DistributeConfig",
    "HardwareConfig",
    "KeySpec",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "config_yaml",
    "default_config_yaml",
    "describe_keys",
    "dump_config",
    "key_specs",
    "load_config",
    "markdown_table",
    "model_arguments",
    "override_list",
    "validate_config",
]
