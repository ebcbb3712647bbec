"""Assertions shared by the `diagnose.watch` tests over peer models (flamingo-pytorch, open_clip)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


def summary(out: Path) -> dict:
    return json.loads((Path(out) / "summary.json").read_text())


def assert_healthy_run(out: Path, w, batch: int) -> dict:
    """A healthy control: no error finding or alarm, a loss below chance, every record kind, a whole
    run directory whose report puts root causes before findings. Returns the run's summary entry."""
    s = summary(out)
    run = s["runs"][0]
    assert run["kind"] == "watch" and run["chance_loss"] == pytest.approx(math.log(batch))
    assert not [f for f in s["findings"] if f["severity"] == "error"], s["findings"]
    assert w.alarms == []
    assert run["final_loss"]["loss_clip"] < math.log(batch)
    recs = w.records
    assert {"gradient_flow", "gradient_flow.layer", "loss_split", "collapse"} <= set(recs["probe"])
    for name in ("image", "text", "input"):
        assert len(recs[(recs["probe"] == "collapse") & (recs["target"] == name)])
    assert (Path(out) / "report.md").is_file() and (Path(out) / "records.csv.gz").is_file()
    report = (Path(out) / "report.md").read_text()
    assert report.index("## Root causes") < report.index("## Findings")
    return run


def assert_top_cause(out: Path, cause: str, finding: str | None = None) -> dict:
    run = summary(out)["runs"][0]
    assert run["root_causes"][0]["cause"] == cause, run["root_causes"]
    if finding is not None:
        assert finding in run["root_causes"][0]["findings"]
    return run


def assert_report_rebuilds(out: Path) -> None:
    """`diagnose report DIR` rebuilds a watch's run directory: the same report.md."""
    from typer.testing import CliRunner

    from diagnose.cli import app
    from diagnose.engine import plots_child

    plots_child.wait(out)  # the watch's plots and the report that shows them, rendered after close
    before = (Path(out) / "report.md").read_text()
    r = CliRunner().invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert (Path(out) / "report.md").read_text() == before
