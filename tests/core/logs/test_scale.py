"""`diagnose logs` on big, wide and broken logs: bounded reduction that keeps what the rules read,
wide tables read by the recognised columns only, bad values as one line (exit 2) or a stated skip."""

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from diagnose.cli import app
from diagnose.core.logframe.weights import solve_weights
from diagnose.core.logs.builder import LogBuilder
from diagnose.core.rules.logs import end_stats

runner = CliRunner()


def _logs(tmp_path, path, *args):
    out = tmp_path / "report"
    r = runner.invoke(app, ["logs", str(path), "--out", str(out), *args])
    assert r.exit_code in (0, 1), r.output
    return r, json.loads((out / "summary.json").read_text())


def _one_line_exit_2(path, needle, *args):
    r = runner.invoke(app, ["logs", str(path), *args])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.output, r.stderr
    return lines[0]


def _series(n, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    clip = math.log(64) + rng.normal(0, 0.1, n)
    mrl = clip + rng.normal(0, 0.05, n)
    return steps, clip, mrl


def _build(max_points, n=20_000):
    steps, clip, mrl = _series(n)
    b = LogBuilder("test", max_points=max_points)
    for lo in range(0, n, 3000):  # in chunks, as the readers feed it
        sl = slice(lo, lo + 3000)
        for metric, v in (("loss_clip", clip[sl]), ("loss_mrl", mrl[sl]), ("total", 0.25 * clip[sl] + mrl[sl])):
            b.add_long("run", "train", metric, steps[sl], v, steps[sl] + 2)
    return b.result()


def test_reduction_is_bounded_and_keeps_what_the_rules_read():
    raw, small = _build(10**9), _build(128)
    assert small.bucket_steps > 1 and small.frame.groupby("metric").size().max() <= 128
    assert small.raw_points == raw.raw_points == 60_000 and int(small.frame["n"].sum()) == 60_000
    # bucket means keep the linear relation between the columns exactly: the weights are still solved
    w = solve_weights({"run": small.frame})
    assert w["fits"] and w["weights"] == {"loss_clip": 0.25, "loss_mrl": 1.0}
    # ... and the standard error of the end-window mean (what the chance band reads) is preserved
    (m0, s0, n0), (m1, s1, n1) = (end_stats(p.frame, "train", "loss_clip") for p in (raw, small))
    assert m1 == pytest.approx(m0, abs=1e-3)
    assert s1 / math.sqrt(n1) == pytest.approx(s0 / math.sqrt(n0), rel=0.35)


def test_wide_csv_reads_only_recognised_columns(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.random((400, 3000)).round(3), columns=[f"feature_{i}" for i in range(3000)])
    df.insert(0, "step", np.arange(400))
    df.insert(1, "train/loss", math.log(128) + rng.normal(0, 0.02, 400))
    log = tmp_path / "wide.csv"
    df.to_csv(log, index=False)
    t0 = time.perf_counter()
    _, s = _logs(tmp_path, log)
    assert time.perf_counter() - t0 < 30  # was > 300 s before the column selection (issue 18)
    assert any("3002 columns, 2 read" in n for n in s["log"]["notes"])
    assert [f for f in s["findings"] if f["id"] == "loss_at_chance"]


def test_nan_and_huge_values_are_reported_not_scored(tmp_path):
    rows = ["step,train/loss,val/r@1"] + [f"{i},{math.log(64) + 0.01 * (i % 2):.4f}," for i in range(30)]
    rows += ["30,nan,0.9", "31,1e400,", "32,nan,"]
    log = tmp_path / "metrics.csv"
    log.write_text("\n".join(rows) + "\n")
    r, s = _logs(tmp_path, log, "--batch-size", "64")
    (nf,) = [f for f in s["findings"] if f["id"] == "loss_nonfinite"]
    assert nf["severity"] == "error" and nf["evidence"]["first_step"] == 30 and nf["evidence"]["count"] == 3
    assert math.isnan(s["runs"][0]["final_loss"]["loss_contrastive"])  # NaN stays NaN, never a good score
    assert not [f for f in s["findings"] if f["id"] == "loss_at_chance"]


def test_text_cells_in_a_numeric_column_are_skipped_and_noted(tmp_path):
    rows = ["step,loss"] + [f"{i},{math.log(32):.4f}" for i in range(20)] + ["20,oops", "21,4.0"]
    log = tmp_path / "metrics.csv"
    log.write_text("\n".join(rows) + "\n")
    _, s = _logs(tmp_path, log)
    assert any("non-numeric values skipped" in n and "'oops'" in n for n in s["log"]["notes"])


def test_too_few_noisy_points_give_no_chance_verdict(tmp_path):
    log = tmp_path / "m.csv"
    log.write_text("step,loss\n1,2.0\n2,4.0\n")  # mean 3.0, 0.23 from ln 16, but sigma ~1.4 on 2 points
    r, s = _logs(tmp_path, log)
    assert r.exit_code == 0 and not [f for f in s["findings"] if f["id"] == "loss_at_chance"]


def test_huge_finite_values_do_not_crash(tmp_path):
    log = tmp_path / "h.jsonl"
    log.write_text("".join(json.dumps({"step": i, "loss": 1e300 * (i + 1)}) + "\n" for i in range(10)))
    r, s = _logs(tmp_path, log)
    assert s["runs"][0]["final_loss"]["loss_contrastive"] == pytest.approx(1e301)


@pytest.mark.parametrize("name, content, needle", [
    ("m.csv", "step,loss\n1,abc\n2,def\n", "column 'loss' holds text ('abc')"),
    ("h.jsonl", '{"step": 1, "loss": "abc"}\n{"step": 2, "loss": "x"}\n', "column 'loss' holds text"),
    ("b.jsonl", '{"step": 1, "loss": true}\n', "column 'loss' holds text ('true')"),
    ("d.jsonl", '{"a":' * 200_000 + "1" + "}" * 200_000 + "\n", ":1: JSON nested too deeply"),
    ("trainer_state.json", '{"log_history": {"loss": 1}}', "'log_history' list"),
    ("trainer_state.json", '{"log_history": [1, 2]}', "log_history[0] is int"),
    ("m.csv", "step,loss,loss\n1,2,3\n", "repeats column(s) loss"),
    ("lr.csv", "step,lr-AdamW\n1,0.1\n2,0.2\n", "no losses or recalls found"),
    ("m.csv", '"step,loss\n1,2\n', "no loss or recall columns found"),
])
def test_bad_values_one_line_exit_2(tmp_path, name, content, needle):
    log = tmp_path / name
    log.write_text(content)
    _one_line_exit_2(log, needle)


def test_deep_nesting_within_limits_is_a_stated_skip(tmp_path):
    deep = {"loss": 1.0}
    for _ in range(12):
        deep = {"x": deep}
    log = tmp_path / "n.jsonl"
    log.write_text("".join(json.dumps({"step": i, "train/loss": 4.16, "extra": deep}) + "\n" for i in range(8)))
    _, s = _logs(tmp_path, log)
    assert any("nested deeper than" in n for n in s["log"]["notes"])


def test_out_that_is_a_file_fails_before_reading_and_quiet_is_accepted(tmp_path):
    log = tmp_path / "m.csv"
    log.write_text("step,loss\n" + "".join(f"{i},{math.log(32):.4f}\n" for i in range(10)))
    blocker = tmp_path / "out"
    blocker.write_text("x")
    line = _one_line_exit_2(log, "exists and is not a directory", "--out", str(blocker), "--quiet")
    assert str(blocker) in line and blocker.read_text() == "x"
    r = runner.invoke(app, ["logs", str(log), "--quiet"])
    assert r.exit_code == 1 and "loss_at_chance" in r.output
