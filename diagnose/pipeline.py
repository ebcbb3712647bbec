"""From runs and records to a run directory: verdicts, findings, summary.json, plots, report.md.

`write_run_dir` is the only place a report is written; `rebuild` re-renders a saved directory from
its records and summary without re-running anything.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from reports import markdown, plots

from .findings import RunContext, severity_rank, sort_findings
from .io import atomic_write_bytes, figure_png, publish
from .rootcause import rank_root_causes
from .rules import run_rules
from .runs import RunSummary, command_line, environment
from .verdict import verdict

RECORDS_FILE = "records.csv.gz"
def context(run: dict) -> RunContext:
    cfg = run.get("resolved_config", {})
    return RunContext(run["name"], run["batch_size"], run["steps"], run["chance_loss"], run.get("retrieval", {}),
                      run.get("final_loss", {}), cfg.get("losses", {}).get("max_logit_scale", 100.0), cfg)


def analyse(run_dicts: list[dict], records: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """Verdict per run and findings over all runs, from records and run summaries only."""
    findings = []
    for run in run_dicts:
        run["verdict"] = verdict(run)
        recs = records[records["run"] == run["name"]]
        found = run_rules(recs, context(run))
        run["root_causes"] = rank_root_causes([f.to_dict() for f in found], run["verdict"])
        findings.extend(found)
    return run_dicts, [f.to_dict() for f in sort_findings(findings)]


def build_summary(runs: list[tuple[RunSummary, pd.DataFrame]]) -> tuple[dict, pd.DataFrame]:
    run_dicts, frames = [], []
    for run, recs in runs:
        d = run.to_dict()
        d["resolved_config"] = run.cfg.to_dict()
        run_dicts.append(d)
        frames.append(recs.assign(run=run.name))
    records = pd.concat(frames, ignore_index=True)[["run", "step", "probe", "target", "metric", "value"]]
    run_dicts, findings = analyse(run_dicts, records)
    summary = {"runs": run_dicts, "findings": findings, "hypotheses": [], "command": command_line(),
               "environment": environment()}
    return summary, records


def exit_code(summary: dict, fail_on: str) -> int:
    threshold = severity_rank(fail_on)
    return 1 if any(severity_rank(f["severity"]) >= threshold for f in summary["findings"]) else 0


def _render_plots(records: pd.DataFrame, runs: list[dict]) -> list[tuple[str, str, bytes]]:
    return [(f"{stem}.png", caption, figure_png(fig)) for stem, (caption, fig) in plots.render_all(records, runs).items()]


def write_run_dir(out: Path, summary: dict, records: pd.DataFrame, title: str | None = None,
                  write_records: bool = True) -> str:
    """Write records, plots, summary.json and report.md (each atomically); returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    if write_records:
        buf = io.BytesIO()
        records.to_csv(buf, index=False, compression={"method": "gzip", "mtime": 0})
        atomic_write_bytes(out / RECORDS_FILE, buf.getvalue())
    figures = _render_plots(records, summary["runs"])
    for name, _, data in figures:
        atomic_write_bytes(out / name, data)
    text = markdown.render(summary, [(name, caption) for name, caption, _ in figures], title)
    publish(out, summary, text)
    return text


def load_run_dir(path: Path) -> tuple[dict, pd.DataFrame]:
    from reference_models import ConfigError

    summary_file, records_file = path / "summary.json", path / RECORDS_FILE
    if not summary_file.is_file() or not records_file.is_file():
        raise ConfigError(f"{path}: not a run directory (expected summary.json and {RECORDS_FILE})")
    try:
        summary = json.loads(summary_file.read_text())
        records = pd.read_csv(records_file)
    except (json.JSONDecodeError, OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"{path}: cannot read run directory ({exc.__class__.__name__})") from None
    missing = {"run", "step", "probe", "target", "metric", "value"} - set(records.columns)
    if missing or "runs" not in summary:
        raise ConfigError(f"{path}: run directory is incomplete (missing {', '.join(sorted(missing)) or 'runs'})")
    return summary, records


def rebuild(path: Path, title: str | None = None) -> tuple[dict, str]:
    """Re-derive verdicts and findings from the saved records and re-render every file."""
    summary, records = load_run_dir(path)
    summary["runs"], summary["findings"] = analyse(summary["runs"], records)
    if not summary.get("ablation") and (path / "ablation" / "report.md").is_file():
        summary["ablation_report"] = "ablation/report.md"
    text = write_run_dir(path, summary, records, title, write_records=False)
    return summary, text
