"""`diagnose lint`: static checks of model source, printed like a linter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...core.lint import CHECKS, lint_paths
from ..console import console, fail


def lint_command(
    paths: Annotated[list[Path], typer.Argument(help="Python files or directories (searched for *.py).")],
    all_branches: Annotated[bool, typer.Option("--all-branches", help="Also check branches selected by a string switch "
                                                                       "(`if mode == \"seed\":`), skipped by default "
                                                                       "as deliberate alternatives.")] = False,
) -> None:
    """Static checks of model source: `path:line: ID message`; exit 1 when any finding, 0 when none.

    Checks: """
    findings, errors = lint_paths(list(paths), all_branches)
    for f in findings:
        console.print(f.format(), markup=False, highlight=False, soft_wrap=True)
    for e in errors:
        fail(e)
    raise typer.Exit(2 if errors else 1 if findings else 0)


lint_command.__doc__ = ((lint_command.__doc__ or "") + "; ".join(f"{k} {v}" for k, v in CHECKS.items())
                        + ". Suppress with `# noqa: ID`.")
