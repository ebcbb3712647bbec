"""The CI subset of the real-fault benchmark (benchmarks/real_faults/run.py --fast): a few fault scripts of
the dev half (benchmarks/real_faults/dev/) built on peer libraries, one per failure family, and five
healthy runs (healthy.FAST: one per model family but transformers' CLIP, which the fast cases cover;
Lightning and open_clip included), through the runner."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flamingo_pytorch", reason="flamingo-pytorch is in the dev extra")
pytest.importorskip("perceiver_pytorch", reason="perceiver-pytorch is in the dev extra")
pytest.importorskip("transformers")
pytest.importorskip("lightning", reason="lightning is in the [lightning] extra (CI installs it)")
if importlib.util.find_spec("open_clip") is None:  # imported by healthy.py with the tests' torchvision stand-in
    pytest.skip("open-clip-torch: pip install --no-deps -r requirements/peers-nodeps.txt", allow_module_level=True)

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
    assert fast["half"] == "dev" and len(fast["cases"]) == 4
    for case in fast["cases"]:
        assert case["half"] == "dev" and case["family"], case
        assert case["threads"] and case["ground_truth"]
        assert case["top3"][:1] == [case["ground_truth"]], case
        assert case["detected"] and case["first_error_alarm_step"] < 20, case
    t = fast["totals"]
    assert t["top1"] == 1.0 and t["detection_rate"] == 1.0 and t["misses"] == []
    assert sum(f["cases"] for f in t["by_family"].values()) == 4


def test_healthy_runs_learn_without_error_findings(fast):
    assert len(fast["healthy"]) == 5
    assert {r["run"]["model"] for r in fast["healthy"]} == {"resampler", "perceiver", "mrl", "open_clip", "lightning"}
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


def test_fast_is_dev_only():
    proc = subprocess.run([sys.executable, str(RUNNER), "--fast", "--half", "test"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--fast" in proc.stderr and proc.stdout == ""


def test_both_halves_report_totals_side_by_side():
    # one dev case and no healthy run: the shape of --half both without running the test half's cases
    proc = subprocess.run([sys.executable, str(RUNNER), "--half", "both", "--only", "dev/case_latents_ones",
                           "--no-healthy"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["half"] == "both" and set(out["totals"]) == {"dev", "test", "healthy"}
    assert out["totals"]["dev"]["cases"] == 1 and out["totals"]["test"]["cases"] == 0
    assert [(c["half"], c["case"], c["family"]) for c in out["cases"]] == [("dev", "case_latents_ones", "architecture")]


def test_a_case_whose_script_raises_is_a_miss_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(RUNNER.parent))
    spec = importlib.util.spec_from_file_location("real_faults_run_for_crash", RUNNER)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    case = tmp_path / "case_raises.py"
    case.write_text('CAUSE = "wrong_targets"\nTHREADS = ("a/b#1",)\nFAMILY = "x"\n\n\n'
                    "def train(watch, steps=100, seed=0, fixed=False):\n"
                    "    raise TypeError(\"observe() got an unexpected keyword argument 'image_embed'\")\n")
    row = run.run_case(case, "crashes", reps=1)
    assert row["crashed"].startswith("TypeError: observe() got an unexpected keyword")
    assert "case_raises.py:7" in row["crashed"]
    assert not row["top1_correct"] and not row["top3_correct"] and not row["detected"]
    assert run.case_totals([row])["misses"] == ["case_raises"]
