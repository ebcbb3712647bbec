"""Typer entry point. Bad input (ConfigError) is one line on stderr and exit code 2."""

from __future__ import annotations

import functools
from typing import Callable

import typer

from reference_models.config import ConfigError

from .commands.ablate import ablate_command
from .commands.checkpoint import checkpoint_command
from .commands.instrumented import compare_command, gradflow_command, report_command
from .commands.lint import lint_command
from .commands.logs import logs_command
from .commands.train import train_command
from .console import fail

app = typer.Typer(
    name="diagnose",
    help="Diagnose vision-to-text alignment training failures: run, probe, ablate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _guarded(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc))
            raise typer.Exit(2) from None

    return wrapper


@app.callback()
def _root() -> None:
    """Diagnose vision-to-text alignment training failures: run, probe, ablate, report."""


app.command("train")(_guarded(train_command))
app.command("gradflow")(_guarded(gradflow_command))
app.command("compare")(_guarded(compare_command))
app.command("ablate")(_guarded(ablate_command))
app.command("report")(_guarded(report_command))
app.command("checkpoint")(_guarded(checkpoint_command))
app.command("logs")(_guarded(logs_command))
app.command("lint")(_guarded(lint_command))


def main() -> None:
    app()
