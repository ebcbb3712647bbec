"""File writing and console output shared by the offline commands (checkpoint, logs)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.markup import escape

from ...core.files import atomic_write_bytes, figure_png, publish
from ...core.staging import staged
from ..console import console

if TYPE_CHECKING:  # matplotlib: imported by the commands that draw, when they draw
    from matplotlib.figure import Figure

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def write_report(out: Path, summary: dict, render: Callable[[dict, list[tuple[str, str]]], str],
                 figures: list[tuple[str, str, Figure]], files: dict[str, bytes] | None = None) -> str:
    """report.md + summary.json + one PNG per figure (+ `files`), written as a whole (`staged`); returns the
    markdown."""
    pngs = [(f"{stem}.png", caption, figure_png(fig)) for stem, caption, fig in figures]
    text = render(summary, [(name, caption) for name, caption, _ in pngs])
    with staged(out) as tmp:
        for name, _, png in pngs:
            atomic_write_bytes(tmp / name, png)
        for name, data in (files or {}).items():
            atomic_write_bytes(tmp / name, data)
        publish(tmp, summary, text)
    return text


def print_root_causes(runs: list[dict]) -> None:
    """Each run's ranked root causes, before any finding: the first thing a reader sees is why."""
    from reports.markdown import root_cause_lines  # the report module: when a command reports, not for --help

    for run in runs:
        for line in root_cause_lines(run, markdown=False):
            console.print(line, markup=False, highlight=False)


def print_findings(findings: list[dict]) -> None:
    from reports.markdown import finding_counts

    counts = finding_counts(findings)
    console.print(f"findings: {counts['error']} error, {counts['warning']} warning, {counts['info']} info")
    for f in findings:
        target = f" ({f['target']})" if f.get("target") else ""
        console.print(f"[{SEVERITY_STYLE[f['severity']]}]{f['severity']:>7}[/] {escape(f['id'] + target)}",
                      highlight=False)
        console.print(f"        {f['message']}", markup=False, highlight=False)
