"""`diagnose ablate -- python train.py`: a user's own script (tests/lab/scripts/two_tower.py), unmodified,
run once per fix and seed; the verdicts come from the runs' own watches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diagnose.cli.app import app

SCRIPT = str(Path(__file__).resolve().parents[1] / "lab" / "scripts" / "two_tower.py")
runner = CliRunner()


def ablate(tmp_path, *args: str, script_args: tuple[str, ...] = ("--lr", "2e-4"), quiet: bool = True):
    out = tmp_path / "ablation"
    result = runner.invoke(app, ["ablate", *(["--quiet"] if quiet else []), "--out", str(out), *args, "--",
                                 sys.executable, SCRIPT, *script_args])
    return result, out


def test_the_right_fix_is_confirmed_and_the_wrong_one_refuted_over_two_seeds(tmp_path):
    # lr 2e-4 is too low for 20 steps: x10 learns, x0.1 does not (tests/lab/scripts/two_tower.py)
    result, out = ablate(tmp_path, "--seeds", "2", "--steps", "20", "--workers", "2", "--fix", "lr_up",
                         "--fix", "lr_down")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    verdicts = {h["id"]: h for h in summary["hypotheses"]}
    assert verdicts["lr_up"]["verdict"] == "confirmed", verdicts["lr_up"]["summary"]
    assert verdicts["lr_down"]["verdict"] == "refuted", verdicts["lr_down"]["summary"]
    for h in verdicts.values():
        assert [d["seed"] for d in h["per_seed"]] == [0, 1]
        for d in h["per_seed"]:  # the numbers that decided it, from the runs themselves
            assert d["fix"]["loss_over_lnB"] > 0 and d["baseline"]["steps"] == 20
    for d in verdicts["lr_up"]["per_seed"]:  # the mechanism, before/after: larger steps
        assert d["fix"]["update_peak"] > 3 * d["baseline"]["update_peak"]
    # seed 1 is a different run of the same script (the script seeds 0; the runner shifts it)
    base = [h["per_seed"] for h in verdicts.values()][0]
    assert base[0]["baseline"]["loss_over_lnB"] != base[1]["baseline"]["loss_over_lnB"]
    assert (out / "runs" / "baseline" / "summary.json").is_file()
    text = (out / "report.md").read_text()
    assert "## Answer" in text and "confirmed: `lr_up`" in text


def test_candidates_come_from_the_baselines_causes(tmp_path):
    # the text tower is left out of the optimizer: the baseline names param_not_in_optimizer, whose fix
    # is add_missing_params; the controls fill in to two candidates
    result, out = ablate(tmp_path, "--seeds", "1", "--steps", "20", script_args=("--lr", "3e-3", "--drop-text"))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    ids = [h["id"] for h in summary["hypotheses"]]
    assert ids[0] == "add_missing_params", ids
    assert summary["hypotheses"][0]["source"] == "cause:param_not_in_optimizer"


def test_a_control_on_the_forward_pass_follows_when_nothing_was_refuted(tmp_path):
    # the model is built again after the optimizer: no lr change reaches it (lr_up: not applicable), so
    # centre_inputs runs as the control; relinking the optimizer to the model's parameters is the fix
    result, out = ablate(tmp_path, "--seeds", "1", "--steps", "20", script_args=("--lr", "1e-2", "--rebuilt"))
    assert result.exit_code == 0, result.output
    hyps = {h["id"]: h for h in json.loads((out / "summary.json").read_text())["hypotheses"]}
    assert hyps["lr_up"]["verdict"] == "not applicable"
    assert hyps["centre_inputs"]["source"] == "control" and hyps["centre_inputs"]["verdict"] == "refuted"
    assert hyps["relink_optimizer"]["verdict"] == "confirmed", hyps["relink_optimizer"]["summary"]


@pytest.mark.parametrize("script_args, expected", [
    (("--no-watch",), "without opening a diagnose.watch"),
    (("--crash",), "exited"),
])
def test_a_script_that_cannot_be_ablated_is_one_line_and_exit_2(tmp_path, script_args, expected):
    result, out = ablate(tmp_path, "--seeds", "1", "--steps", "5", "--fix", "lr_up", script_args=script_args)
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".ablation*"))  # nothing half-written


def test_unknown_fix_and_bad_variant_are_bad_input(tmp_path):
    result, _ = ablate(tmp_path, "--fix", "nonsense")
    assert result.exit_code == 2 and "unknown fix" in result.output
    result, _ = ablate(tmp_path, "--variant", "no-equals-sign")
    assert result.exit_code == 2 and "NAME=ARGS" in result.output
    result, _ = ablate(tmp_path, "--set", "optimization.lr=1")
    assert result.exit_code == 2 and "--set applies to a reference config" in result.output


def test_list_fixes_names_each_fix_with_the_causes_it_tests():
    result = runner.invoke(app, ["ablate", "--list-fixes"])
    assert result.exit_code == 0
    assert "fix_temperature" in result.output and "tests temperature" in result.output


def test_report_rebuilds_a_script_ablation(tmp_path):
    result, out = ablate(tmp_path, "--seeds", "1", "--steps", "8", "--fix", "lr_up")
    assert result.exit_code == 0, result.output
    before = json.loads((out / "summary.json").read_text())["hypotheses"]
    rebuilt = runner.invoke(app, ["report", str(out)])
    assert rebuilt.exit_code in (0, 1), rebuilt.output
    text = (out / "report.md").read_text()
    assert text.startswith("# Ablation in your script:") and "## Answer" in text
    assert json.loads((out / "summary.json").read_text())["hypotheses"] == before


@pytest.mark.parametrize("whole_group", [True, False])
def test_ctrl_c_stops_every_run_and_leaves_nothing(tmp_path, whole_group):
    """Ctrl-C (the terminal's whole process group, or the driver alone): exit 130 at once, no script process
    left running, neither the report directory nor the runs' scratch directory on disk."""
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "ab"
    marker = str(tmp_path / "marker")  # an argument only this test's script processes carry
    cmd = [sys.executable, "-m", "diagnose", "ablate", "--quiet", "--seeds", "3", "--fix", "lr_up", "--out", str(out),
           "--", sys.executable, SCRIPT, "--lr", "2e-4", "--steps", "100000", "--marker", marker]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: (os.setsid(), signal.signal(signal.SIGINT, signal.SIG_DFL)))
    deadline = time.time() + 60
    while time.time() < deadline and not subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout:
        time.sleep(0.2)  # until the baseline's script process runs
    time.sleep(3)  # and has opened its watch
    (os.killpg if whole_group else os.kill)(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert left == [], left
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_ray_runs_show_their_progress_and_give_the_local_verdicts(tmp_path):
    """--executor ray on a local instance: the verdicts of the local executor (lr_up confirmed, lr_down refuted), and
    each run's step reaches the console while it runs (its watch's progress file, polled in the Ray task and sent to
    the driver through an actor), before the run's result line."""
    import re

    ray = pytest.importorskip("ray", reason="ray is in the dev extra")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        result, out = ablate(tmp_path, "--seeds", "1", "--steps", "20", "--executor", "ray", "--fix", "lr_up",
                             "--fix", "lr_down", quiet=False)
        assert result.exit_code == 0, result.output
        verdicts = {h["id"]: h["verdict"] for h in json.loads((out / "summary.json").read_text())["hypotheses"]}
        assert verdicts == {"lr_up": "confirmed", "lr_down": "refuted"}
        lines = result.output.splitlines()
        for run in ("baseline", "fix:lr_up", "fix:lr_down"):
            steps = [i for i, ln in enumerate(lines) if re.fullmatch(rf"run {re.escape(run)}: step (\d+)/20", ln)]
            ends = [i for i, ln in enumerate(lines) if ln.startswith(f"run {run}: ") and i not in steps]
            assert steps and ends and steps[0] < ends[0], (run, result.output)
            assert 1 <= int(lines[steps[0]].rsplit(" ", 1)[1].split("/")[0]) <= 20
    finally:
        ray.shutdown()
