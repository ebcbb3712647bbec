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


class LiveRuns:
    """The console end of runs' live events (`diagnose.lab.live`): on a terminal, a progress bar per run
    (step, CLIP loss against ln B); everywhere, each alarm as one line when it fires (CI logs too). Under
    --quiet the CLI does not listen at all. Called from the runs' thread or the workers' drain thread."""

    def __init__(self):
        self.bar: Progress | None = None
        self.tasks: dict[str, Any] = {}
        self.alarms: list[dict] = []

    def __enter__(self) -> LiveRuns:
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
                                transient=True)
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, event: dict) -> None:
        if event.get("kind") == "alarm":
            self.alarms.append(event)
            console.print(event["line"], markup=False, highlight=False, soft_wrap=True)
        elif event.get("kind") == "step" and self.bar is not None:
            run = str(event["run"])
            if run not in self.tasks:
                self.tasks[run] = self.bar.add_task(run, total=event["total"], status="")
            loss = event.get("loss")
            status = (f"loss_clip {loss:.3f} vs ln(B) {event['chance']:.3f}" if loss is not None else "")
            self.bar.update(self.tasks[run], completed=event["step"], status=status)

    def finished(self, run: str) -> None:
        """A run ended (its result line follows): its bar goes."""
        task = self.tasks.pop(run, None)
        if task is not None and self.bar is not None:
            self.bar.remove_task(task)


@contextmanager
def live_runs(quiet: bool) -> Iterator[LiveRuns | None]:
    """Listen to the runs started inside the block (`LiveRuns`); nothing listens under --quiet."""
    if quiet:
        yield None
        return
    from ..lab.live import listening  # light: no torch

    with LiveRuns() as runs, listening(runs):
        yield runs


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
