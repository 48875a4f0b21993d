"""The trainer: a config in, a run folder out (``train``, ``resume``).

``api`` sets a run up, ``loop`` runs its epochs through the one compiled step
(``step``), and every file or line a run produces comes from a
``keras.callbacks.Callback`` (``callbacks``). ``setup`` (machine, model,
optimizer), ``schedules``, ``batchnorm``, ``checkpoint``, ``resume``, ``state``
and ``report`` are the parts; ``cluster``/``rendezvous`` (pure Python) and
``strategy``/``workers`` (TensorFlow) are what several workers need.
"""

from resnet_builder.training.api import TrainResult, resume, train

__all__ = ["TrainResult", "resume", "train"]
