"""resnet-builder: pre-activation ResNets (ResNetV2) of any depth in Keras 3."""

__version__ = "0.1.0"
