"""File writing and console output shared by the offline commands (checkpoint, logs)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Annotated, Callable

import typer
from matplotlib.figure import Figure
from rich.markup import escape

from reference_models.config import ConfigError

from ..console import console
from ..io import atomic_write_bytes, atomic_write_text, write_json

FailOnOpt = Annotated[str, typer.Option("--fail-on", help="Exit 1 when a finding at or above this severity exists: info, warning, error.")]
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def check_fail_on(fail_on: str) -> None:
    if fail_on not in ("info", "warning", "error"):
        raise ConfigError(f"--fail-on '{fail_on}': expected one of info, warning, error")


def write_report(out: Path, summary: dict, render: Callable[[dict, list[tuple[str, str]]], str],
                 figures: list[tuple[str, str, Figure]]) -> str:
    """report.md + summary.json + one PNG per figure, each written atomically; returns the markdown."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for stem, caption, fig in figures:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        atomic_write_bytes(out / f"{stem}.png", buf.getvalue())
        plots.append((f"{stem}.png", caption))
    text = render(summary, plots)
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", text)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return text


def print_findings(findings: list[dict]) -> None:
    counts = {s: sum(f["severity"] == s for f in findings) for s in ("error", "warning", "info")}
    console.print(f"findings: {counts['error']} error, {counts['warning']} warning, {counts['info']} info")
    for f in findings:
        target = f" ({f['target']})" if f.get("target") else ""
        console.print(f"[{SEVERITY_STYLE[f['severity']]}]{f['severity']:>7}[/] {escape(f['id'] + target)}", highlight=False)
        console.print(f"        {f['message']}", markup=False, highlight=False)
