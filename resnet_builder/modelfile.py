"""Writing ``.keras`` files and architecture drawings for ``build``, atomically.

A model file is written to a temporary name beside the target and renamed,
so an interrupted write never leaves a half file under the real name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .architecture import Architecture
from .errors import UserError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(temp_path)`` then rename it onto ``path`` (same folder, same suffix)."""
    path = Path(path)
    if not path.parent.exists():
        raise UserError(f"folder {path.parent} does not exist", hint="create it first")
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _check_suffix(output: str) -> None:
    if not str(output).endswith(".keras"):
        raise UserError(f"--output {output} must end in .keras",
                        hint="Keras 3 model files use the .keras suffix")


def save_model_file(arch: Architecture, *, output: str | None, plot: str | None,
                    num_classes: int, head: str = "gap", dropout: float = 0.0,
                    **model_args: Any) -> dict[str, Any]:
    """Write the classifier to ``output`` and/or draw it; returns facts for the summary."""
    from .runtime import import_tensorflow_quietly

    facts: dict[str, Any] = {}
    model = None
    if plot or output:
        import_tensorflow_quietly()
    if plot:
        from .classifier import ResNetV2Classifier, build_backbone

        model = ResNetV2Classifier(build_backbone(arch), num_classes, head=head, dropout=dropout,
                                   **model_args)
        draw_model(model, plot)
        facts["plot"] = str(plot)
    if output:
        _check_suffix(output)
        start = time.perf_counter()
        if model is None:
            from .classifier import ResNetV2Classifier, build_backbone

            model = ResNetV2Classifier(build_backbone(arch), num_classes, head=head,
                                       dropout=dropout, **model_args)
        atomic_write(output, model.save)
        facts.update(output=str(output), output_bytes=os.path.getsize(output),
                     save_seconds=round(time.perf_counter() - start, 3))
    return facts


def draw_model(model, path: str) -> None:
    """``keras.utils.plot_model`` with a clear message when pydot or graphviz is missing."""
    import keras

    try:
        import pydot  # noqa: F401
    except ImportError:
        raise UserError("drawing the model needs the pydot package",
                        hint="pip install pydot (or pip install 'resnet-builder[plot]'), and "
                             "install graphviz: apt-get install graphviz / brew install graphviz"
                        ) from None
    try:
        keras.utils.plot_model(model, to_file=str(path), show_shapes=True, expand_nested=True,
                               dpi=72)
    except (ImportError, OSError, FileNotFoundError) as exc:
        raise UserError(f"could not draw the model: {exc}",
                        hint="install graphviz: apt-get install graphviz / brew install graphviz "
                             "(and pip install pydot)") from None
    if not Path(path).exists():
        raise UserError("could not draw the model: graphviz's `dot` program was not found",
                        hint="install graphviz: apt-get install graphviz / brew install graphviz")
