"""`diagnose logs` names causes from what a log can show: a logged learning rate, a logged logit scale,
and the probe records and alarms our own `TensorBoardSink` writes; where a log cannot tell the causes
apart it says so on one line and names the commands that can."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from diagnose.cli import app
from diagnose.core.rules.log_causes import LR_HIGH

runner = CliRunner()
B = 32


def _logs(tmp_path, path, *args):
    out = tmp_path / "report"
    r = runner.invoke(app, ["logs", str(path), "--out", str(out), *args])
    assert r.exit_code in (0, 1), r.output
    return r, json.loads((out / "summary.json").read_text())


def _causes(summary) -> list[str]:
    return [c["cause"] for c in summary["runs"][0]["root_causes"]]


def _by_id(summary, fid):
    return [f for f in summary["findings"] if f["id"] == fid]


def _trainer_state(path, lr, loss, steps=300, every=10, seed=1):
    """An HF Trainer `trainer_state.json`: `lr(frac)` and `loss(frac, rng)` over the fraction of the run."""
    rng = np.random.default_rng(seed)
    history = [{"epoch": round(s / 100, 2), "grad_norm": 0.5, "learning_rate": lr(s / steps),
                "loss": round(loss(s / steps, rng), 4), "step": s} for s in range(every, steps + 1, every)]
    history.append({"epoch": 3.0, "step": steps, "total_flos": 1e12, "train_loss": 0.1, "train_runtime": 60.0})
    path.write_text(json.dumps({"global_step": steps, "log_history": history, "logging_steps": every,
                                "max_steps": steps, "train_batch_size": B}))


def at_chance(frac, rng):
    return math.log(B) + rng.normal(0, 0.02)


def learning(frac, rng):
    return math.log(B) * (1 - 0.7 * frac) + rng.normal(0, 0.02)


# --- a logged learning rate ---------------------------------------------------------------------------

def test_trainer_state_lr_1e_1_ranks_learning_rate_too_high(tmp_path):
    log = tmp_path / "trainer_state.json"
    _trainer_state(log, lambda f: 0.1, at_chance)
    r, s = _logs(tmp_path, log)
    assert "learning_rate_too_high" in _causes(s), s["runs"][0]["root_causes"]
    (f,) = _by_id(s, "learning_rate_high")
    assert f["severity"] == "warning" and f["evidence"]["lr_peak"] == 0.1 and f["evidence"]["peak_step"] == 10
    assert f["evidence"]["warmup"] == "absent before the first logged step"  # at its peak from step 10
    assert "0.1 at step 10" in f["message"] and "loss_at_chance" in f["message"]
    assert "no root cause implicated" not in r.output


@pytest.mark.parametrize("lr", [5e-5, 1e-2])  # HF's default, and the sane lr just under the bound (0.0144)
def test_a_sane_lr_is_not_a_cause_and_the_log_says_what_can_tell(tmp_path, lr):
    assert lr < LR_HIGH
    log = tmp_path / "trainer_state.json"
    _trainer_state(log, lambda f: lr, at_chance)
    r, s = _logs(tmp_path, log)
    assert _by_id(s, "loss_at_chance") and not _by_id(s, "learning_rate_high")
    assert "learning_rate_too_high" not in _causes(s)
    head = s["runs"][0]["root_causes"][0]
    assert head["cause"] == "unexplained" and "cannot tell its causes apart" in head["fix"]
    assert "diagnose ablate -- python train.py" in head["fix"] and "diagnose.watch" in head["fix"]
    lines = [ln for ln in r.output.splitlines() if "cannot tell" in ln]
    assert "no root cause implicated" not in r.output and len(lines) <= 1


def test_a_high_lr_in_a_run_that_learned_is_no_cause(tmp_path):
    log = tmp_path / "trainer_state.json"
    _trainer_state(log, lambda f: 0.1, learning)
    _, s = _logs(tmp_path, log)
    (f,) = _by_id(s, "learning_rate_high")
    assert f["severity"] == "info" and _causes(s) == []


def test_a_schedule_that_reached_zero_before_learning_is_lr_schedule(tmp_path):
    log = tmp_path / "trainer_state.json"
    _trainer_state(log, lambda f: 5e-4 * max(0.0, 1 - f / 0.3), at_chance)  # gone by 30% of the run
    _, s = _logs(tmp_path, log)
    (f,) = _by_id(s, "lr_schedule_gone")
    assert f["evidence"]["gone_from_step"] == 90 and f["evidence"]["peak_step"] == 10
    assert _causes(s)[0] == "lr_schedule"
    # the same schedule over the whole run (linear decay to 0 at the last step): the end still has an lr
    _trainer_state(log, lambda f: 5e-4 * (1 - f), at_chance)
    _, s = _logs(tmp_path, log)
    assert not _by_id(s, "lr_schedule_gone")
    # gone early, but the run learned before it: the schedule working
    _trainer_state(log, lambda f: 5e-4 * max(0.0, 1 - f / 0.3), learning)
    _, s = _logs(tmp_path, log)
    assert not _by_id(s, "lr_schedule_gone")


# --- a logged logit scale -----------------------------------------------------------------------------

def _csv(path, scale, loss=at_chance, steps=100):
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "train/loss", "train/logit_scale"])
        for s in range(steps):
            w.writerow([s, round(loss(s / steps, rng), 4), round(scale(s / steps), 4)])


def test_a_logit_scale_that_fell_toward_1_is_the_temperature(tmp_path):
    log = tmp_path / "metrics.csv"
    _csv(log, lambda f: 14.29 * (1.2 / 14.29) ** f)  # 14.29 -> 1.2 over the run
    _, s = _logs(tmp_path, log)
    (f,) = _by_id(s, "temperature_toward_1")
    assert f["evidence"]["logit_scale_first"] == pytest.approx(14.29) and f["evidence"]["last_step"] == 99
    assert "step 99" in f["message"] and "temperature" in _causes(s)


def test_a_constant_scale_near_the_raw_init_is_no_evidence(tmp_path):
    log = tmp_path / "metrics.csv"
    _csv(log, lambda f: 1.9)  # as a log of the raw parameter t (or a soft scale from the start) looks
    _, s = _logs(tmp_path, log)
    assert not _by_id(s, "temperature_toward_1")


def test_a_logit_scale_at_its_clamp(tmp_path):
    log = tmp_path / "metrics.csv"
    _csv(log, lambda f: min(100.0, 14.29 + 300 * f))
    _, s = _logs(tmp_path, log)
    (f,) = _by_id(s, "temperature_at_clamp")
    assert f["evidence"]["logit_scale_end"] == 100.0 and f["evidence"]["clamp"] == 100.0


def test_lightning_metrics_csv_with_the_lr_monitor_column(tmp_path):
    """Lightning's CSVLogger with LearningRateMonitor: `lr-AdamW` on its own rows, the loss on others."""
    rng = np.random.default_rng(0)
    rows = []
    for step in range(0, 200, 5):
        rows.append({"lr-AdamW": 0.1, "step": step})
        rows.append({"epoch": step // 50, "step": step, "train_loss_step": round(at_chance(0, rng), 4)})
    log = tmp_path / "metrics.csv"
    with open(log, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=sorted(set().union(*rows)))
        w.writeheader()
        w.writerows(rows)
    _, s = _logs(tmp_path, log)
    assert list(s["runs"][0]["final_loss"]) == ["loss_contrastive"]  # a lone loss: the watch's name for it
    assert _causes(s)[0] == "learning_rate_too_high"
