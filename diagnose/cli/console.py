"""The one console of the tool: rich output on stdout, errors on stderr, progress switchable off."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Ticker:
    """What a long loop calls; a no-op when progress is off."""

    def __init__(self, progress: Progress | None = None, task=None):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, **fields) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, **fields)


@contextmanager
def progress(description: str, total: int, quiet: bool = False) -> Iterator[Ticker]:
    """Rich progress on a terminal; silent under --quiet or when stdout is not a TTY."""
    if quiet or not console.is_terminal:
        yield Ticker()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total, status="")
        yield Ticker(bar, task)


def fail(message: str) -> None:
    """One clear line on stderr (no traceback); the caller exits 2."""
    err_console.print(f"error: {message}", markup=False)



def reporting(quiet: bool) -> dict[str, Any]:
    """How a library call reports to this console (`diagnose.lab.runs.resolve_config(..., **reporting(quiet))`):
    `say` one line, start a `progress` bar; neither under --quiet."""
    if quiet:
        return {}
    return {"say": lambda text: console.print(text, markup=False),
            "progress": lambda description, total: progress(description, total)}
