"""Using a trained model: predict, evaluate and export over one inference core.

The core: ``loading`` (a model object, .keras file or run folder -> ``InferenceModel``),
``decode`` (the batched tf.data decode pipeline), ``gradcam``. On top of it:
``predict`` (with ``sources`` and ``drawing``), ``evaluate`` (with ``metrics``) and
``export`` (with ``export_formats``). Imports no training, benchmark or CLI code.
"""
