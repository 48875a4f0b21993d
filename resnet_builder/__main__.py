"""``python -m resnet_builder`` runs the CLI."""

from .cli import main

main()
