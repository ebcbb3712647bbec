"""`diagnose ablate -- python train.py [args]`: fixes tested in the user's own script.

The runs and verdicts: `diagnose.lab.script_ablation`; the fixes: `diagnose.engine.interventions`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import typer

from ...core.errors import ConfigError
from ...core.files import publish
from ...core.provenance import command_line, environment
from ...core.staging import staged
from ..console import console, fail

DEFAULT_SCRIPT_SEEDS = 3
LINE_SECONDS = 30.0  # off a terminal (CI logs, a pipe): a run's progress line at most this often


class StepLines:
    """Runs' progress off a terminal: a line when a run reports its first step, then at most every
    LINE_SECONDS per run (a terminal gets a bar per run instead: `console.LiveRuns`)."""

    def __init__(self):
        self.last: dict[str, float] = {}
        self.done: set[str] = set()
        self.lock = threading.Lock()

    def __enter__(self) -> "StepLines":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __call__(self, event: dict) -> None:
        if event.get("kind") == "alarm":
            console.print(event["line"], markup=False, highlight=False, soft_wrap=True)
        if event.get("kind") != "step":
            return
        run, now = str(event["run"]), time.monotonic()
        with self.lock:
            if run in self.done or now - self.last.get(run, -LINE_SECONDS) < LINE_SECONDS:
                return
            self.last[run] = now
        total = f"/{event['total']}" if event.get("total") else ""
        console.print(f"run {run}: step {event['step']}{total}", markup=False, highlight=False)

    def finished(self, run: str) -> None:
        with self.lock:
            self.done.add(run)


@contextmanager
def run_progress(quiet: bool) -> Iterator[object | None]:
    """Listen to the runs (whatever executes them) while the block runs: a bar per run on a terminal, lines
    elsewhere; nothing under --quiet (the runs then write no progress at all)."""
    if quiet:
        yield None
        return
    from ...lab.live import listening
    from ..console import LiveRuns

    with (LiveRuns() if console.is_terminal else StepLines()) as sink, listening(sink):
        yield sink


def parse_variants(variants: list[str] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in variants or []:
        name, sep, args = v.partition("=")
        if not sep or not name.strip() or not args.strip():
            raise ConfigError(f"--variant {v!r}: expected NAME=ARGS, e.g. --variant 'batch=--batch-size 128'")
        out[name.strip()] = shlex.split(args)
    return out


def print_fixes() -> None:
    from ...engine.interventions import CATALOGUE

    for name, cls in CATALOGUE.items():
        params = ", ".join(f"{k}={v}" for k, v in cls.defaults.items())
        extra = f" ({params})" if params else ""
        console.print(f"{name:<20} tests {', '.join(cls.tests):<40} {cls.changes}{extra}", markup=False,
                      soft_wrap=True)


def ablate_script(script: list[str], fix: list[str] | None, variant: list[str] | None, steps: int | None,
                  seeds: int | None, out: Path | None, executor: str, workers: int, ray_address: str | None,
                  cpus_per_run: int, max_fixes: int, timeout: float | None, quiet: bool) -> None:
    from ...lab.executors import Failed, ThreadExecutor, make_executor
    from ...lab.script_ablation import ScriptFailed, discard, run_script_ablation, scratch_dir, stop_all

    seeds = seeds or DEFAULT_SCRIPT_SEEDS
    variants = parse_variants(variant)
    stem = Path(next((a for a in script if a.endswith(".py")), script[0])).stem
    out = out or Path("runs") / f"ablate-{stem}"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")

    progress = None

    def note(name: str, result) -> None:
        if progress is not None:
            progress.finished(name)  # its bar goes; its result line follows
        if isinstance(result, Failed):
            console.print(f"run {name}: FAILED: {result.error}", markup=False)
        elif quiet:
            return
        elif result["status"].get("not_applicable"):
            console.print(f"run {name}: not applicable: {result['status']['not_applicable']}", markup=False)
        else:
            run = result["summary"]["runs"][0]
            v = run.get("verdict") or {}
            console.print(f"run {name}: {v.get('label', '?')} (loss/ln(B) {v.get('loss_over_chance')}; "
                          f"{run.get('steps')} steps)", markup=False)

    if not quiet:
        console.print(f"ablation of `{shlex.join(script)}`: {seeds} seed(s), runs on executor {executor}",
                      markup=False)
    work = scratch_dir(out)
    try:
        workers = max(1, min(workers, os.cpu_count() or 1))
        # local: threads that each wait on one script process (the script is the worker), torch threads split
        ex = (ThreadExecutor(workers, max(1, (os.cpu_count() or 1) // workers)) if executor == "local" else
              make_executor(executor, workers, ray_address, cpus_per_run))
        with ex, run_progress(quiet) as progress:
            try:
                ab = run_script_ablation(script, steps, seeds, list(fix or []), variants, ex, work, progress=note,
                                         max_fixes=max_fixes, timeout=timeout)
            except ScriptFailed as exc:
                raise ConfigError(f"{exc}; nothing written") from None
        _write(out, ab)
    except BaseException:  # Ctrl-C or an error: no run goes on, nothing of the runs is left behind
        stop_all()
        raise
    finally:
        discard(work)
    for h in ab.summary.hypotheses:
        console.print(f"{h['verdict']:>14}  {h['id']}: {h['summary'][:160]}", markup=False)
    console.print(f"report: {out / 'report.md'}", markup=False)
    if ab.summary.sections["script_ablation"]["failed_runs"]:
        from ..options import EXIT_INCOMPLETE

        fail(f"ablation incomplete: see {out / 'report.md'}")
        raise typer.Exit(EXIT_INCOMPLETE)
    raise typer.Exit(0)


def _write(out: Path, ab) -> None:
    from reports import markdown

    from ...core.records import RUN_COLUMNS
    from ...engine.rundir import RECORDS_FILE

    summary = ab.summary
    summary.command, summary.environment = command_line(), environment()
    data = summary.to_dict()
    text = markdown.render(data, [], f"Ablation in your script: {data['script_ablation']['command']}")
    with staged(out, keep_existing=False) as tmp:
        if ab.runs_dir.is_dir():
            shutil.move(str(ab.runs_dir), str(tmp / "runs"))
        if len(ab.records):
            ab.records[list(RUN_COLUMNS)].to_csv(tmp / RECORDS_FILE, index=False, compression="gzip")
        publish(tmp, data, text)
