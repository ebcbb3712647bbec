"""A run directory on disk: records, plots, summary.json, report.md.

`write_run_dir` is the only place an instrumented run's report is written; `rebuild` re-derives
verdicts, findings and root causes from the saved records and re-renders every file, without
re-running anything.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from reports import markdown, plots

from ..core.analysis import analyse
from ..core.errors import ConfigError
from ..core.files import atomic_write_bytes, figure_png, publish
from ..core.records import RUN_COLUMNS
from ..core.seed_counts import refresh_seed_section
from ..core.staging import staged
from ..core.summary import Summary

RECORDS_FILE = "records.csv.gz"


def _render_plots(records: pd.DataFrame, runs: list[dict]) -> list[tuple[str, str, bytes]]:
    return [(f"{stem}.png", caption, figure_png(fig)) for stem, (caption,
                                                                 fig) in plots.render_all(records, runs).items()]


def write_run_dir(out: Path, summary: Summary, records: pd.DataFrame, title: str | None = None,
                  write_records: bool = True) -> str:
    """Write records, plots, summary.json and report.md as a whole (see `staged`); returns the markdown."""
    data = summary.to_dict()
    figures = _render_plots(records, data["runs"])  # rendered before anything is written
    text = markdown.render(data, [(name, caption) for name, caption, _ in figures], title)
    with staged(out) as tmp:
        if write_records:
            buf = io.BytesIO()
            records[list(RUN_COLUMNS)].to_csv(buf, index=False, compression={"method": "gzip", "mtime": 0})
            atomic_write_bytes(tmp / RECORDS_FILE, buf.getvalue())
        for name, _, png in figures:
            atomic_write_bytes(tmp / name, png)
        publish(tmp, data, text)
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
    summary = Summary.from_dict(raw, str(summary_file))
    orphans = [r.name for r in summary.runs if r.name not in set(records["run"])]
    if orphans:
        raise ConfigError(f"{summary_file}: run '{orphans[0]}' has no rows in {RECORDS_FILE} "
                          f"(runs there: {', '.join(sorted(set(records['run']))[:5]) or 'none'})")
    return summary, records


def rebuild(path: Path, title: str | None = None) -> tuple[Summary, str]:
    """Re-derive verdicts, findings and root causes from the saved records and re-render every file."""
    summary, records = load_run_dir(path)
    try:  # the types are checked on load; a key the report needs may still be missing or malformed
        analyse(summary, records)
        refresh_seed_section(summary)
        if summary.sections.get("ablation"):  # an ablation's findings are its baseline's
            summary.findings = [f for f in summary.findings if f["run"] == "baseline"]
        elif (path / "ablation" / "report.md").is_file():
            summary.sections["ablation_report"] = "ablation/report.md"
        text = write_run_dir(path, summary, records, title, write_records=False)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:  # nothing was written: rendering comes first
        raise ConfigError(f"{path / 'summary.json'}: missing or malformed entry ({type(exc).__name__}: {exc}); "
                          "expected a summary.json written by diagnose") from None
    return summary, text
