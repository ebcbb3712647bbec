"""File writing and console output shared by the offline commands (checkpoint, logs)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from matplotlib.figure import Figure
from rich.markup import escape

from reports.markdown import finding_counts, root_cause_lines

from ..console import console
from ..io import atomic_write_bytes, figure_png, publish

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def write_report(out: Path, summary: dict, render: Callable[[dict, list[tuple[str, str]]], str],
                 figures: list[tuple[str, str, Figure]]) -> str:
    """report.md + summary.json + one PNG per figure, each written atomically; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for stem, caption, fig in figures:
        atomic_write_bytes(out / f"{stem}.png", figure_png(fig))
        plots.append((f"{stem}.png", caption))
    text = render(summary, plots)
    publish(out, summary, text)
    return text


def print_root_causes(runs: list[dict]) -> None:
    """Each run's ranked root causes, before any finding: the first thing a reader sees is why."""
    for run in runs:
        for line in root_cause_lines(run, markdown=False):
            console.print(line, markup=False, highlight=False)


def print_findings(findings: list[dict]) -> None:
    counts = finding_counts(findings)
    console.print(f"findings: {counts['error']} error, {counts['warning']} warning, {counts['info']} info")
    for f in findings:
        target = f" ({f['target']})" if f.get("target") else ""
        console.print(f"[{SEVERITY_STYLE[f['severity']]}]{f['severity']:>7}[/] {escape(f['id'] + target)}", highlight=False)
        console.print(f"        {f['message']}", markup=False, highlight=False)
