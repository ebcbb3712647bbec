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

from reference_models import ConfigError
from reports import markdown, plots

from .analysis import analyse
from .io import atomic_write_bytes, figure_png, publish
from .summary import Summary

RECORDS_FILE = "records.csv.gz"
RECORD_COLUMNS = ["run", "step", "probe", "target", "metric", "value"]


def _render_plots(records: pd.DataFrame, runs: list[dict]) -> list[tuple[str, str, bytes]]:
    return [(f"{stem}.png", caption, figure_png(fig)) for stem, (caption, fig) in plots.render_all(records, runs).items()]


def write_run_dir(out: Path, summary: Summary, records: pd.DataFrame, title: str | None = None,
                  write_records: bool = True) -> str:
    """Write records, plots, summary.json and report.md (each atomically); returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    if write_records:
        buf = io.BytesIO()
        records[RECORD_COLUMNS].to_csv(buf, index=False, compression={"method": "gzip", "mtime": 0})
        atomic_write_bytes(out / RECORDS_FILE, buf.getvalue())
    data = summary.to_dict()
    figures = _render_plots(records, data["runs"])
    for name, _, png in figures:
        atomic_write_bytes(out / name, png)
    text = markdown.render(data, [(name, caption) for name, caption, _ in figures], title)
    publish(out, data, text)
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
    missing = set(RECORD_COLUMNS) - set(records.columns)
    if missing:
        raise ConfigError(f"{records_file}: incomplete records (missing columns {', '.join(sorted(missing))})")
    values = pd.to_numeric(records["value"], errors="coerce")
    steps = pd.to_numeric(records["step"], errors="coerce")
    if (values.isna() & records["value"].notna()).any() or steps.isna().any():
        raise ConfigError(f"{records_file}: 'step' and 'value' must be numbers")
    records = records.assign(value=values.astype(float), step=steps.astype(int))
    for col in ("run", "probe", "target", "metric"):
        records[col] = records[col].astype(str)
    return Summary.from_dict(raw, str(summary_file)), records


def rebuild(path: Path, title: str | None = None) -> tuple[Summary, str]:
    """Re-derive verdicts, findings and root causes from the saved records and re-render every file."""
    summary, records = load_run_dir(path)
    analyse(summary, records)
    if summary.sections.get("ablation"):  # an ablation's findings are its baseline's
        summary.findings = [f for f in summary.findings if f["run"] == "baseline"]
    elif (path / "ablation" / "report.md").is_file():
        summary.sections["ablation_report"] = "ablation/report.md"
    text = write_run_dir(path, summary, records, title, write_records=False)
    return summary, text
