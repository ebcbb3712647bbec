"""`diagnose ablate -- torchrun ...`: the fix reaches every rank through the environment; rank 0 writes."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diagnose.cli.app import app

SCRIPT = Path(__file__).resolve().parents[1] / "lab" / "scripts" / "ddp_two_tower.py"


def test_torchrun_script_two_ranks(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not on PATH")  # it ships with torch: this only skips on a broken install
    out = tmp_path / "ab"
    result = CliRunner().invoke(app, ["ablate", "--quiet", "--out", str(out), "--seeds", "1", "--steps", "20",
                                      "--fix", "lr_up", "--", torchrun, "--standalone", "--nproc-per-node", "2",
                                      str(SCRIPT), "--lr", "2e-4"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [h["verdict"] for h in summary["hypotheses"]] == ["confirmed"]
    base = json.loads((out / "runs" / "baseline" / "summary.json").read_text())["runs"][0]
    assert base["world_size"] == 2 and base["steps"] == 20
