"""``python -m resnet_builder`` runs the CLI."""

from resnet_builder.cli import main

main()
