"""Writing ``.keras`` files and architecture drawings for ``build``.

``keras_file.write_model_file`` writes to a temporary name beside the target
and renames it, so an interrupted write never leaves a half file behind.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from resnet_builder.errors import UserError
from resnet_builder.model.architecture import Architecture
from resnet_builder.model.keras_writer import write_model_file


def _check_suffix(output: str) -> None:
    if not str(output).endswith(".keras"):
        raise UserError(f"--output {output} must end in .keras",
                        hint="Keras 3 model files use the .keras suffix")


def save_model_file(arch: Architecture, *, output: str | None, plot: str | None,
                    num_classes: int, head: str = "gap", dropout: float = 0.0,
                    **model_args: Any) -> dict[str, Any]:
    """Write the classifier to ``output`` and/or draw it; returns facts for the summary.

    The file is written straight from the plan (``keras_file``), without
    TensorFlow; only drawing builds the Keras model.
    """
    facts: dict[str, Any] = {}
    if output:
        _check_suffix(output)
        if not Path(output).resolve().parent.exists():
            raise UserError(f"folder {Path(output).parent} does not exist",
                            hint="create it first")
        start = time.perf_counter()
        write_model_file(output, arch, num_classes=num_classes, head=head, dropout=dropout,
                         **model_args)
        facts.update(output=str(output), output_bytes=os.path.getsize(output),
                     save_seconds=round(time.perf_counter() - start, 3))
    if plot:
        from resnet_builder.runtime import import_tensorflow_quietly

        import_tensorflow_quietly()
        from resnet_builder.model.classifier import ResNetV2Classifier, build_backbone

        model = ResNetV2Classifier(build_backbone(arch), num_classes, head=head, dropout=dropout,
                                   **model_args)
        draw_model(model, plot)
        facts["plot"] = str(plot)
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
