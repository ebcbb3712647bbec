"""A run directory's plots, rendered by a detached child process after the directory was written.

`start(out)` runs ``python -m diagnose.engine.plots_child OUT DIGEST`` in its own session (a Ctrl-C in
the user's terminal or the end of the user's process does not stop it), at a lower priority, with no
console. The child opens OUT once (`diagnose.core.staging.Pinned`), checks that summary.json is still
the one this run wrote (DIGEST: a newer run into the same path is left alone), reads the records and
the summary from it, renders the PNGs into it one whole file at a time and writes report.md with
them last: the report never names a PNG that is not there. A child that fails leaves the first report,
which says how to rebuild the plots (`diagnose report OUT`). `wait(out)` waits for this process's
child for `out` (tests, benchmarks, a script that wants the plots before it ends).

The report of `diagnose logs` is drawn the same way: its directory holds the loss curves it plots (LOG_CURVES, the
parsed log's loss rows, a few thousand at most) instead of records, so the command ends once its findings are
written, without importing matplotlib (`render_logs`, also what `diagnose report` runs on such a directory).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

_CHILDREN: dict[str, subprocess.Popen] = {}  # realpath of the run directory -> its renderer
LOG_CURVES = "log_curves.csv"  # diagnose logs: the rows of its loss plot
LOG_FIGURE = ("log_losses.png", "Logged losses per run")


def _key(out: Path) -> str:
    return os.path.realpath(out)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def start(out: Path, title: str | None = None) -> str:
    """Start the renderer for the run directory `out`; returns "" when started, else why it could not."""
    out = Path(_key(out))
    try:
        digest = _digest((out / "summary.json").read_bytes())
    except OSError as exc:
        return f"summary.json unreadable: {exc.strerror or exc.__class__.__name__}"
    root = str(Path(__file__).resolve().parents[2])  # where `diagnose` and `reports` are importable from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "GITHUB_STEP_SUMMARY": ""}
    argv = [sys.executable, "-m", "diagnose.engine.plots_child", str(out), digest, *([title] if title else [])]
    try:
        child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return f"no child process could start: {exc.__class__.__name__}"
    previous = _CHILDREN.pop(str(out), None)
    if previous is not None:
        previous.poll()  # reaped if it ended
    _CHILDREN[str(out)] = child
    return ""


def wait(out: Path, timeout: float | None = 120.0) -> int | None:
    """Wait for the renderer this process started for `out`; its exit code (None: none started, or still
    running at the timeout)."""
    child = _CHILDREN.get(_key(out))
    if child is None:
        return None
    try:
        return child.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def render_into(out: Path, digest: str, title: str | None = None) -> str:
    """The child's work (see the module docstring); returns what it did, for its exit code."""
    import pandas as pd

    from reports import markdown

    from ..core.staging import Pinned
    from .rundir import RECORDS_FILE, checked_records, render_plots

    with Pinned(out) as run:
        raw = run.read("summary.json")
        if _digest(raw) != digest:
            return "replaced"  # a newer run owns this path now
        data = json.loads(raw)
        if "log" in data:  # diagnose logs
            figures, text = render_logs(data, run.read(LOG_CURVES))
        else:
            records = checked_records(pd.read_csv(io.BytesIO(run.read(RECORDS_FILE)), compression="gzip"),
                                      out / RECORDS_FILE)
            figures = render_plots(records, data["runs"])
            text = markdown.render(data, [(name, caption) for name, caption, _ in figures], title)
        if _digest(run.read("summary.json")) != digest:
            return "replaced"
        for name, _, png in figures:
            run.write(name, png)
        run.write("report.md", text.encode())  # last: the report names only files already there
    return "written"


def render_logs(data: dict, curves: bytes) -> tuple[list[tuple[str, str, bytes]], str]:
    """The PNG of a `diagnose logs` report from its saved loss curves, and the report that shows it."""
    import pandas as pd

    from reports.offline import logs_figure, logs_markdown

    from ..core.files import figure_png

    frame = pd.read_csv(io.BytesIO(curves), dtype={"run": str, "split": str, "metric": str})
    fig = logs_figure(frame, data["runs"])
    figures = [(LOG_FIGURE[0], LOG_FIGURE[1], figure_png(fig[1]))] if fig else []
    return figures, logs_markdown(data, [(name, caption) for name, caption, _ in figures])


def main(argv: list[str]) -> int:
    try:
        os.nice(10)  # the user's training may go on: the plots can wait
    except (AttributeError, OSError):
        pass
    out, digest, title = Path(argv[0]), argv[1], (argv[2] if len(argv) > 2 else None)
    try:
        return 0 if render_into(out, digest, title) == "written" else 1
    except (OSError, ValueError, KeyError):  # the directory removed or changed under us: the first report stays
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
