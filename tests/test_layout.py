"""The house rules: rooms import only downward, modules and functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "resnet_builder"
ROOMS = ("model", "config", "data", "training", "inference", "benchmark")
BASE = ("depth", "errors", "interrupts", "runtime", "runs", "files", "plots", "scores")

# What each room must never import (a lower room never imports a higher one).
FORBIDDEN = {
    "base": {"model", "config", "data", "training", "inference", "benchmark", "cli"},
    "model": {"config", "data", "training", "inference", "benchmark", "cli"},
    "config": {"data", "training", "inference", "benchmark", "cli"},
    "data": {"training", "inference", "benchmark", "cli"},
    "training": {"inference", "benchmark", "cli"},
    "inference": {"training", "benchmark", "cli"},
    "benchmark": {"cli"},
    "top": {"cli"},  # __init__: the public API
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def room_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[0] in ROOMS:
        return parts[0]
    if parts[0] in BASE:
        return "base"
    if parts[0].startswith("cli"):
        return "cli"  # cli.py and the command modules it adds (cli_inference.py)
    return {"__main__": "main"}.get(parts[0], "top")


def imported_names(source: str, package: tuple[str, ...]) -> list[str]:
    """Every module name ``source`` (a module of ``package``) imports, anywhere in it
    (function-level imports too), relative imports made absolute, and
    ``importlib.import_module("...")`` strings."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            names.append(str(node.args[0].value))
    return names


def imported_rooms(path: Path) -> set[str]:
    """The rooms (or ``cli``) a module of the package imports."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    return rooms_in(imported_names(path.read_text(), package))


def rooms_in(names: list[str]) -> set[str]:
    """The rooms (or ``cli``) among imported module names."""
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "resnet_builder" and len(parts) > 1:
            found.add("cli" if parts[1].startswith("cli") else parts[1])
    return found


def test_relative_and_importlib_imports_are_seen() -> None:
    source = ("from ..training import loop\nfrom . import images\n"
              "def f():\n    importlib.import_module('resnet_builder.inference.predict')\n")
    names = imported_names(source, ("resnet_builder", "data"))
    assert {"resnet_builder.training.loop", "resnet_builder.data.images",
            "resnet_builder.inference.predict"} <= set(names)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_rooms_import_only_downward(path: Path) -> None:
    room = room_of(path)
    if room in ("cli", "main"):
        return
    bad = imported_rooms(path) & FORBIDDEN[room]
    assert not bad, f"{path.relative_to(PACKAGE)} ({room}) imports {sorted(bad)}"


def test_the_layering_check_catches_an_upward_import() -> None:
    upward = "def f():\n    from resnet_builder.training.api import train\n"
    assert rooms_in(imported_names(upward, ("resnet_builder", "model"))) & FORBIDDEN[
        "model"] == {"training"}


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name} is over {MAX_MODULE_LINES}"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_module_shadows_a_function_of_its_package() -> None:
    """``resnet_builder.predict`` etc. are functions: no top-level module may take the name."""
    import resnet_builder

    top_modules = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir()
                                                             if p.is_dir()}
    assert not top_modules & set(resnet_builder._EXPORTS), top_modules & set(
        resnet_builder._EXPORTS)
