"""Writing configs and their docs: the commented default config, a run's resolved config,
and the key table of the README and ``train --help``.

Every text here is built from ``key_specs``, so it cannot drift from the schema.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from resnet_builder.config.checks import validate_config
from resnet_builder.config.messages import allowed, yaml_text
from resnet_builder.config.schema import SECTION_CLASSES, Config, config_to_dict, key_specs
from resnet_builder.files import atomic_write_text


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, width=96, initial_indent=f"{indent}# ",
                         subsequent_indent=f"{indent}# ", break_on_hyphens=False)


def _section_doc(section: str) -> str:
    return (SECTION_CLASSES[section].__doc__ or section).strip()


def _render(data: dict[str, dict[str, Any]], *, comments: bool) -> list[str]:
    """YAML lines of a config in schema order, optionally with each key's help above it."""
    lines: list[str] = []
    for section, specs in key_specs().items():
        if comments:
            lines += ["", *_comment(_section_doc(section), "")]
        lines.append(f"{section}:")
        for name, spec in specs.items():
            if comments:
                lines += _comment(f"{spec.help} [{allowed(spec)}]", "  ")
            lines.append(f"  {name}: {yaml_text(data[section][name])}")
    return lines


def default_config_yaml() -> str:
    """The full default config with every key's help, for ``resnet-builder config --show``."""
    head = ["# resnet-builder training config: every key with its default.",
            "# Use: resnet-builder train --config this.yaml [--set section.key=value ...]",
            "# Keys left out of a config file take these defaults."]
    return "\n".join(head + _render(config_to_dict(Config()), comments=True)) + "\n"


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically so a crash never leaves half a file."""
    text = "# Resolved config written by resnet-builder; reload with --config.\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text + config_yaml(validate_config(cfg)))


def config_yaml(cfg: Config) -> str:
    """A config as YAML that loads back as the same config (``config`` prints it)."""
    return "\n".join(_render(config_to_dict(cfg), comments=False)) + "\n"


def describe_keys() -> list[tuple[str, str, str]]:
    """(dotted key, default as YAML, help with what is allowed) for every key."""
    return [(spec.dotted, yaml_text(spec.default), f"{spec.help} Allowed: {allowed(spec)}.")
            for specs in key_specs().values() for spec in specs.values()]


def markdown_table() -> str:
    """The README's key table, built from describe_keys() (``train --help`` lists the same
    keys through describe_keys; tests/test_config.py checks the README holds this table)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| Key | Default | Description |", "|---|---|---|"]
    rows += [f"| `{key}` | `{cell(default)}` | {cell(help)} |"
             for key, default, help in describe_keys()]
    return "\n".join(rows) + "\n"
