"""`diagnose logs` on hostile logs (issue 28 item 7): NaN / inf / 1e400 values are the `loss_nonfinite`
finding (exit 1), never a crash or a score; a log with thousands of loss columns is read, a bounded number
of them analysed, and the report says how many."""

import json
import math

import pytest

NAN_LOGS = {
    # NaN rows in the total and its components (the weights are solved from the finite rows only)
    "log_nan.csv": "step,loss,loss_clip,loss_mrl\n" + "".join(
        f"{i},{'nan' if i % 3 == 1 else f'{4.16 + 0.01 * i:.4f}'},{4.0 + 0.01 * i:.4f},"
        f"{'inf' if i == 6 else f'{0.16 - 0.002 * i:.4f}'}\n" for i in range(12)),
    "log_nan.jsonl": "".join(
        json.dumps({"step": i, "loss": math.nan if i % 3 == 1 else 4.16 + 0.01 * i,
                    "loss_clip": math.inf if i == 5 else 4.0 + 0.01 * i, "loss_mrl": 0.16 - 0.002 * i}) + "\n"
        for i in range(12)),
    # a column that is NaN throughout (pivot_table dropped it: KeyError in the rules before)
    "all_nan.csv": "step,loss,loss_clip,loss_mrl\n" + "".join(f"{i},nan,nan,nan\n" for i in range(6)),
    # 1e400 overflows to inf: the least-squares SVD did not converge on it (LinAlgError before)
    "huge.csv": "step,loss,loss_clip\n0,4.16,1e400\n" + "".join(f"{i},{4.16 - 0.01 * i:.4f},{4.0 - 0.01 * i:.4f}\n"
                                                                for i in range(1, 8)),
}


@pytest.mark.parametrize("name", list(NAN_LOGS))
def test_nonfinite_log_is_a_finding_not_a_crash(cli, tmp_path, name):
    log = tmp_path / name
    log.write_text(NAN_LOGS[name])
    result = cli(["logs", log, "--batch-size", "64", "--out", tmp_path / "out"])
    assert result.exit_code == 1, (result.exit_code, result.stderr[-1500:])
    assert "Traceback" not in result.output and "error:" not in result.stderr, result.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    (nf,) = [f for f in s["findings"] if f["id"] == "loss_nonfinite"]
    assert nf["severity"] == "error" and nf["evidence"]["count"] >= 1
    # the weights come from the finite rows only: any number they report is finite, never 'nan'
    for f in s["findings"]:
        if f["id"].startswith("loss_weights"):
            ls = f["evidence"].get("least_squares", {})
            assert all(math.isfinite(v) for v in ls.values()), f
            assert "nan" not in f["message"].lower(), f["message"]


def test_all_nan_loss_stays_nan(cli, tmp_path):
    log = tmp_path / "all_nan.csv"
    log.write_text(NAN_LOGS["all_nan.csv"])
    cli(["logs", log, "--batch-size", "64", "--out", tmp_path / "out"])
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    final = s["runs"][0]["final_loss"]
    assert final and all(math.isnan(v) for v in final.values())  # NaN stays NaN, never a good score
    assert not [f for f in s["findings"] if f["id"] in ("loss_at_chance", "loss_weights")]


def test_three_thousand_loss_columns_are_read_and_a_bounded_number_analysed(cli, tmp_path):
    from diagnose.core.logs.builder import MAX_LOSS_SERIES

    n = 3000
    rows = ["step," + ",".join(f"loss_{i}" for i in range(n))]
    rows += [f"{s}," + ",".join(f"{4.1 + 0.001 * ((i * 7 + s) % 13):.3f}" for i in range(n)) for s in range(5)]
    log = tmp_path / "wide.csv"
    log.write_text("\n".join(rows) + "\n")
    result = cli(["logs", log, "--batch-size", "64", "--out", tmp_path / "out"])
    assert result.exit_code in (0, 1), result.stderr[-1500:]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    analysed = s["runs"][0]["final_loss"]
    assert sorted(analysed) == sorted(f"loss_{i}" for i in range(MAX_LOSS_SERIES))  # the first ones, in order
    (note,) = [x for x in s["log"]["notes"] if "loss components" in x]
    assert f"{n} train loss components logged, the first {MAX_LOSS_SERIES} analysed" in note
    assert f"{n - MAX_LOSS_SERIES} read but not analysed (loss_{MAX_LOSS_SERIES}," in note
    assert "read but not analysed" in " ".join(result.stdout.split())  # on the console too
