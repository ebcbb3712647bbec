"""`diagnose ablate -- python train.py` beyond a plain loop: a Lightning script using our callback (the runs as
tasks of a local Ray instance: tests/cli/test_ablate_script.py, test_ray_runs_show_their_progress_and_...)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diagnose.cli.app import app

SCRIPTS = Path(__file__).resolve().parents[1] / "lab" / "scripts"
runner = CliRunner()


def verdicts(out: Path) -> dict[str, str]:
    return {h["id"]: h["verdict"] for h in json.loads((out / "summary.json").read_text())["hypotheses"]}


def test_lightning_script_through_the_callback(tmp_path):
    pytest.importorskip("lightning", reason="lightning is in the dev extra")
    out = tmp_path / "ab"
    result = runner.invoke(app, ["ablate", "--quiet", "--out", str(out), "--seeds", "1", "--steps", "20",
                                 "--fix", "lr_up", "--fix", "lr_down", "--", sys.executable,
                                 str(SCRIPTS / "lightning_two_tower.py"), "--lr", "2e-4"])
    assert result.exit_code == 0, result.output
    assert verdicts(out) == {"lr_up": "confirmed", "lr_down": "refuted"}
    assert ": step " not in result.output  # --quiet: no progress lines
    base = json.loads((out / "runs" / "baseline" / "summary.json").read_text())["runs"][0]
    assert base["steps"] == 20  # the watch stopped fit at the cap
