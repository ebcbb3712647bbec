"""The CI subset of the real-fault benchmark (benchmarks/real_faults/run.py --fast): a few fault scripts
built on peer libraries, one per failure family, and four healthy runs, through the runner itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flamingo_pytorch", reason="flamingo-pytorch is in the dev extra")
pytest.importorskip("perceiver_pytorch", reason="perceiver-pytorch is in the dev extra")
pytest.importorskip("transformers")

RUNNER = Path(__file__).resolve().parents[2] / "benchmarks" / "real_faults" / "run.py"


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    out = tmp_path_factory.mktemp("real_faults") / "fast.json"
    proc = subprocess.run([sys.executable, str(RUNNER), "--fast", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == json.loads(out.read_text())
    return json.loads(out.read_text())


def test_each_fast_case_is_detected_and_its_cause_ranked_first(fast):
    assert len(fast["cases"]) == 4
    for case in fast["cases"]:
        assert case["threads"] and case["ground_truth"]
        assert case["top3"][:1] == [case["ground_truth"]], case
        assert case["detected"] and case["first_error_alarm_step"] < 20, case
    t = fast["totals"]
    assert t["top1"] == 1.0 and t["detection_rate"] == 1.0 and t["misses"] == []


def test_healthy_runs_learn_without_error_findings(fast):
    assert len(fast["healthy"]) == 4
    for run in fast["healthy"]:
        assert run["error_findings"] == [] and run["first_error_alarm_step"] is None, run
        assert run["verdict"].startswith("learned"), run
    assert fast["totals"]["healthy_error_findings"] == 0


def test_overhead_is_a_measured_ratio(fast):
    for row in fast["cases"] + fast["healthy"]:
        assert row["overhead_ratio"] > 0


def test_unknown_case_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, str(RUNNER), "--only", "case_nope"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "case_nope" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
