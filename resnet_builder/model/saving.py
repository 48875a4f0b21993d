"""Writing ``.keras`` files and architecture drawings for ``build``.

Correct first, fast second: with the Keras version the fast writer
(``keras_writer``) was verified on, the file is written straight from the plan
without starting TensorFlow; with any other version the classifier is built and
saved by ``keras.Model.save``, and the returned facts say so (``note``). Either
way the file is written under a temporary name and renamed (``files``), so an
interrupted write never leaves half a file behind.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from resnet_builder.errors import UserError
from resnet_builder.files import atomic_save
from resnet_builder.model.architecture import Architecture
from resnet_builder.model.keras_writer import VERIFIED_KERAS, unverified_keras, write_model_file
from resnet_builder.runtime import import_tensorflow_quietly


def _check_output(output: str) -> None:
    if not str(output).endswith(".keras"):
        raise UserError(f"--output {output} must end in .keras",
                        hint="Keras 3 model files use the .keras suffix", exit_code=2)
    if not Path(output).resolve().parent.exists():
        raise UserError(f"folder {Path(output).parent} does not exist", hint="create it first",
                        exit_code=2)


def _check_pydot() -> None:
    """Before anything is built or written: a missing pydot took ~12 s of TensorFlow to
    report, after ``--output`` had already written its file."""
    try:
        import pydot  # noqa: F401
    except ImportError:
        raise UserError("drawing the model needs the pydot package",
                        hint="pip install pydot (or pip install 'resnet-builder[plot]'), and "
                             "install graphviz: apt-get install graphviz / brew install graphviz"
                        ) from None


def keras_classifier(arch: Architecture, num_classes: int, head: str, dropout: float,
                     **model_args: Any):
    """The Keras classifier for ``arch`` (imports Keras, quietly when TensorFlow runs it)."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import_tensorflow_quietly()
    # Imported here: `build --output` on the verified Keras must not start Keras at all.
    from resnet_builder.model.classifier import ResNetV2Classifier, build_backbone

    return ResNetV2Classifier(build_backbone(arch), num_classes, head=head, dropout=dropout,
                              **model_args)


def save_model_file(arch: Architecture, *, output: str | None, plot: str | None,
                    num_classes: int, head: str = "gap", dropout: float = 0.0,
                    **model_args: Any) -> dict[str, Any]:
    """Write the classifier to ``output`` and/or draw it; returns facts for the summary.

    The facts hold ``output``, ``output_bytes``, ``save_seconds`` and ``plot``
    when written, and ``note`` when the file was saved by Keras rather than the
    fast writer (another Keras version than ``VERIFIED_KERAS``).
    """
    facts: dict[str, Any] = {}
    model = None
    if plot:
        _check_pydot()
    if output:
        _check_output(output)
        start = time.perf_counter()
        installed = unverified_keras()
        if installed is None:
            write_model_file(output, arch, num_classes=num_classes, head=head, dropout=dropout,
                             **model_args)
        else:
            model = keras_classifier(arch, num_classes, head, dropout, **model_args)
            atomic_save(output, model.save)
            facts["note"] = (f"wrote with keras.Model.save: the fast writer is verified for "
                             f"Keras {VERIFIED_KERAS}, this is {installed}")
        facts.update(output=str(output), output_bytes=os.path.getsize(output),
                     save_seconds=round(time.perf_counter() - start, 3))
    if plot:
        model = model or keras_classifier(arch, num_classes, head, dropout, **model_args)
        draw_model(model, plot)
        facts["plot"] = str(plot)
    return facts


def draw_model(model, path: str) -> None:
    """``keras.utils.plot_model`` with a clear message when pydot or graphviz is missing."""
    import keras

    _check_pydot()
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
