"""The `diagnose` command line (console script `diagnose = "diagnose.cli:main"`): the typer app in
`app`, one module per command in `commands`, the options declared once in `options`. Commands that
train import torch and `diagnose.lab` when they run, so `diagnose --help`, `logs`, `report` and `lint`
load no torch.
"""

from .app import app, main

__all__ = ["app", "main"]
