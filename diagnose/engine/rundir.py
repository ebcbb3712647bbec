"""A run directory on disk: records, plots, summary.json, report.md.

`write_run_dir` is the only place an instrumented run's report is written; `rebuild` re-derives
verdicts, findings and root causes from the saved records and re-renders every file, without
re-running anything.

Plots are the slow part (seconds per figure on a long run). `plots="inline"` renders them before the
directory is written (the CLI: its command ends when its directory is complete); `"background"` (a watch's
close) writes records, summary.json and a report that says the plots are coming, then a detached child
process (`diagnose.engine.plots_child`) renders the PNGs into that directory and replaces the report with
one that shows them, written last. So the directory is whole at every moment: first without plots (the
report says so and names the command that rebuilds them), then with them; the report never names a file
that is not there. `"deferred"` renders none and the report says `diagnose report DIR` renders them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd

from reports import markdown
from reports.plots import STEMS

from ..core.analysis import analyse
from ..core.errors import ConfigError
from ..core.files import atomic_write_bytes, figure_png, publish
from ..core.records import RUN_COLUMNS
from ..core.seed_counts import refresh_seed_section
from ..core.staging import staged
from ..core.summary import Summary

RECORDS_FILE = "records.csv.gz"
PLOT_MODES = ("inline", "background", "deferred")


def plots_note(mode: str, out: Path, why: str = "") -> str:
    """What the report says in place of its plots when they are not rendered with it."""
    rebuild = f"`diagnose report {out}`"
    if mode == "background":
        return ("Plots: rendering in the background (a separate process writes the PNGs into this directory, "
                f"then this report with them); if they do not appear, {rebuild} rebuilds them.")
    return f"Plots: not rendered{f' ({why})' if why else ''}; {rebuild} renders them."


def render_plots(records: pd.DataFrame, runs: list[dict]) -> list[tuple[str, str, bytes]]:
    from reports import plots  # matplotlib: only where plots are drawn

    return [(f"{stem}.png", caption, figure_png(fig)) for stem, (caption,
                                                                 fig) in plots.render_all(records, runs).items()]


def records_csv(records: pd.DataFrame) -> bytes:
    """The records file: gzip level 1 (level 9 took longer than formatting the CSV, for a file ~25% smaller)."""
    text = records[list(RUN_COLUMNS)].to_csv(index=False)
    return gzip.compress(text.encode(), compresslevel=1, mtime=0)


def write_run_dir(out: Path, summary: Summary, records: pd.DataFrame, title: str | None = None,
                  write_records: bool = True, plots: str = "inline") -> str:
    """Write records, plots, summary.json and report.md as a whole (see `staged`); returns the markdown.
    `plots`: one of PLOT_MODES (module docstring)."""
    if plots not in PLOT_MODES:
        raise ValueError(f"plots={plots!r}: expected one of {', '.join(PLOT_MODES)}")
    data = summary.to_dict()
    figures = render_plots(records, data["runs"]) if plots == "inline" else []  # before anything is written
    note = None if plots == "inline" else plots_note(plots, out)
    text = markdown.render(data, [(name, caption) for name, caption, _ in figures], title, plots_note=note)
    with staged(out) as tmp:
        if write_records:
            atomic_write_bytes(tmp / RECORDS_FILE, records_csv(records))
        if plots != "inline":  # a previous run's plots must not sit beside this report
            for stale in tmp.glob("*.png"):
                if stale.stem in STEMS:
                    stale.unlink()
        for name, _, png in figures:
            atomic_write_bytes(tmp / name, png)
        publish(tmp, data, text)
    if plots == "background":
        from .plots_child import start

        why = start(out, title)
        if why:  # no child process here: the report says how to get the plots instead
            text = markdown.render(data, [], title, plots_note=plots_note("deferred", out, why))
            atomic_write_bytes(out / "report.md", text.encode())
    return text


def load_run_dir(path: Path) -> tuple[Summary, pd.DataFrame]:
    summary_file, records_file = path / "summary.json", path / RECORDS_FILE
    if not summary_file.is_file() or not records_file.is_file():
        raise ConfigError(f"{path}: not a run directory (expected summary.json and {RECORDS_FILE})")
    try:
        raw = json.loads(summary_file.read_text())
        records = pd.read_csv(records_file)
    except (json.JSONDecodeError, OSError, ValueError, EOFError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read run directory ({exc.__class__.__name__})") from None
    records = checked_records(records, records_file)
    summary = Summary.from_dict(raw, str(summary_file))
    orphans = [r.name for r in summary.runs if r.name not in set(records["run"])]
    if orphans:
        raise ConfigError(f"{summary_file}: run '{orphans[0]}' has no rows in {RECORDS_FILE} "
                          f"(runs there: {', '.join(sorted(set(records['run']))[:5]) or 'none'})")
    return summary, records


def checked_records(records: pd.DataFrame, records_file: Path) -> pd.DataFrame:
    """The columns present, step and value numbers, the names strings."""
    missing = set(RUN_COLUMNS) - set(records.columns)
    if missing:
        raise ConfigError(f"{records_file}: incomplete records (missing columns {', '.join(sorted(missing))})")
    values = pd.to_numeric(records["value"], errors="coerce")
    steps = pd.to_numeric(records["step"], errors="coerce")
    if (values.isna() & records["value"].notna()).any() or steps.isna().any():
        raise ConfigError(f"{records_file}: 'step' and 'value' must be numbers")
    records = records.assign(value=values.astype(float), step=steps.astype(int))
    for col in ("run", "probe", "target", "metric"):
        records[col] = records[col].astype(str)
    return records


def rebuild(path: Path, title: str | None = None) -> tuple[Summary, str]:
    """Re-derive verdicts, findings and root causes from the saved records and re-render every file."""
    summary, records = load_run_dir(path)
    try:  # the types are checked on load; a key the report needs may still be missing or malformed
        analyse(summary, records)
        refresh_seed_section(summary)
        script = summary.sections.get("script_ablation")  # diagnose ablate -- python train.py
        if script and title is None:
            title = f"Ablation in your script: {script.get('command', '')}"
        if summary.sections.get("ablation") or script:  # an ablation's findings are its baseline's
            summary.findings = [f for f in summary.findings if f["run"] == "baseline"]
        elif (path / "ablation" / "report.md").is_file():
            summary.sections["ablation_report"] = "ablation/report.md"
        text = write_run_dir(path, summary, records, title, write_records=False)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:  # nothing was written: rendering comes first
        raise ConfigError(f"{path / 'summary.json'}: missing or malformed entry ({type(exc).__name__}: {exc}); "
                          "expected a summary.json written by diagnose") from None
    return summary, text
