"""The `diagnose` command line (console script `diagnose = "diagnose.cli:main"`): the typer app in
`app`, one module per command in `commands`, the options declared once in `options`. Commands that
train import torch and `diagnose.lab` when they run, so `diagnose --help`, `logs`, `report` and `lint`
load no torch.
"""

import sys

try:
    from .app import app, main
except KeyboardInterrupt:
    # Ctrl-C while the CLI loads (typer, rich, the commands: a second or more, before any command runs):
    # the one line and exit code of an interrupted command (app.EXIT_INTERRUPTED), not a traceback through
    # the imports. Every entry point (console script, python -m diagnose, python -m diagnose.cli) imports
    # the app through here.
    sys.stderr.write("error: interrupted: no output written\n")
    raise SystemExit(130) from None

__all__ = ["app", "main"]
