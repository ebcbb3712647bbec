"""`diagnose logs`: the seed's own numbers, multi-epoch text, CSV, JSON lines, TensorBoard."""

import json
import math

import pytest
from typer.testing import CliRunner

from diagnose.cli import app

runner = CliRunner()

# The seed's "Training Results Comparison" block, verbatim (perceiver-mrl-rca.md).
SEED_LOG = """## Training Results Comparison

### Perceiver Model (Broken)
```
Epoch 10/10:
  Train Loss: 6.0602 (CLIP: 4.8481, MRL: 4.8481)
  Val Loss: 6.0045 (CLIP: 4.8036, MRL: 4.8036)
  R@1: 0.03%, R@5: 0.17%, R@10: 0.34%

Status: NO LEARNING - Loss flat across all 10 epochs
```

### Direct Model (Working)
```
Epoch 10/10:
  Train Loss: 1.1239 (CLIP: 0.9070, MRL: 0.8971)
  Val Loss: ~0.0 (best models saved)
  Retrieval: Improving over time

Status: LEARNING - Loss decreasing consistently
```
"""
PERCEIVER, DIRECT = "Perceiver Model (Broken)", "Direct Model (Working)"


def _logs(tmp_path, path, *args):
    out = tmp_path / "report"
    r = runner.invoke(app, ["logs", str(path), "--out", str(out), *args])
    assert r.exit_code in (0, 1), r.output
    return r, json.loads((out / "summary.json").read_text())


def _by_id(summary, fid):
    return [f for f in summary["findings"] if f["id"] == fid]


def test_seed_numbers(tmp_path):
    log = tmp_path / "seed.log"
    log.write_text(SEED_LOG)
    r, s = _logs(tmp_path, log, "--batch-size", "64")
    assert r.exit_code == 1  # errors present
    assert [run["name"] for run in s["runs"]] == [PERCEIVER, DIRECT]
    # which run is at chance, and the candidate count it implies (~128 = 2 x 64)
    (chance,) = _by_id(s, "loss_at_chance")
    assert chance["run"] == PERCEIVER and chance["severity"] == "error"
    hits = chance["evidence"]["at_chance"]
    assert {h["candidates"] for h in hits} == {128}
    train_clip = next(h for h in hits if h["split"] == "train" and h["component"] == "loss_clip")
    assert train_clip["exp"] == pytest.approx(math.exp(4.8481), abs=0.1) and train_clip["world_size"] == 2
    assert "2 x 64 = 128" in chance["message"] and "2 ranks" in chance["message"]
    # identical components
    (ident,) = _by_id(s, "components_identical")
    assert ident["run"] == PERCEIVER and ident["evidence"]["components"] == ["loss_clip", "loss_mrl"]
    assert len(ident["evidence"]["rows"]) == 2
    # the loss weights, solved over both runs
    (w,) = _by_id(s, "loss_weights")
    assert w["evidence"]["weights"] == {"loss_clip": 0.25, "loss_mrl": 1.0} and w["evidence"]["fits"]
    # recall against random, and the pool it implies
    (rec,) = _by_id(s, "recall_at_random")
    assert rec["run"] == PERCEIVER
    assert rec["evidence"]["implied_pool"] == {"r@1": pytest.approx(3333.3, abs=0.1),
                                               "r@5": pytest.approx(2941.2, abs=0.1),
                                               "r@10": pytest.approx(2941.2, abs=0.1)}
    assert 2800 < rec["evidence"]["pool_estimate"] < 3400
    # the working run has no error, and its approximate "~0.0" val loss is not taken as a number
    assert not [f for f in s["findings"] if f["run"] == DIRECT and f["severity"] != "info"]
    assert any("~0.0" in n for n in s["log"]["notes"])
    assert (tmp_path / "report" / "report.md").read_text().count("loss_at_chance") >= 1


def test_seed_numbers_without_batch_size_and_with_given_weights(tmp_path):
    log = tmp_path / "seed.txt"
    log.write_text(SEED_LOG)
    r, s = _logs(tmp_path, log, "--weights", "clip=0.25,mrl=1.0")
    (chance,) = _by_id(s, "loss_at_chance")
    assert "--batch-size" in chance["message"] and chance["evidence"]["at_chance"][0]["candidates"] == 128
    assert {f["run"] for f in _by_id(s, "loss_weights")} == {PERCEIVER, DIRECT}
    assert not _by_id(s, "loss_weights_mismatch")
    r, s = _logs(tmp_path, log, "--weights", "clip=1.0,mrl=1.0")
    assert {f["run"] for f in _by_id(s, "loss_weights_mismatch")} == {PERCEIVER, DIRECT}


def test_whole_seed_document_is_readable(tmp_path):
    from pathlib import Path

    seed = Path(__file__).resolve().parents[3] / "shared" / "seed" / "perceiver-mrl-rca.md"
    if not seed.is_file():
        pytest.skip("seed document not present beside the checkout")
    r, s = _logs(tmp_path, seed, "--batch-size", "64")
    assert any(f["run"] == PERCEIVER for f in _by_id(s, "loss_at_chance"))


def _epochs(losses, name):
    lines = [f"### {name}"]
    for e, (tot, clip, mrl) in enumerate(losses, 1):
        lines += [f"Epoch {e}/{len(losses)}:", f"  Train Loss: {tot:.4f} (CLIP: {clip:.4f}, MRL: {mrl:.4f})"]
    return "\n".join(lines) + "\n"


def test_flat_loss_across_epochs_in_text(tmp_path):
    flat = [(6.06 + 0.001 * (e % 2), 4.848, 4.848 + 0.001 * (e % 2)) for e in range(10)]
    falling = [(1.24 - 0.012 * e, 0.99 - 0.01 * e, 0.99 - 0.0095 * e) for e in range(10)]
    log = tmp_path / "epochs.log"
    log.write_text(_epochs(flat, "perceiver") + _epochs(falling, "direct"))
    r, s = _logs(tmp_path, log)
    (f,) = _by_id(s, "loss_flat")
    assert f["run"] == "perceiver" and f["evidence"]["points"] == 10 and f["evidence"]["steps"] == [1, 10]
    assert not [x for x in s["findings"] if x["run"] == "direct" and x["severity"] != "info"]


def test_csv_log_from_a_real_training_run(tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app,
                      ["train", "--config", "perceiver", "--scale", "tiny", "--steps", "6", "--set",
                       "dataset.num_train=32",
                            "--set", "dataset.num_val=16", "--set", "dataset.batch_size=16", "--quiet", "--out",
                            str(run)])
    assert r.exit_code == 0, r.output
    r, s = _logs(tmp_path, run / "metrics.csv", "--batch-size", "16")
    assert s["log"]["format"] == "CSV" and s["runs"][0]["steps"] == 5
    (w,) = _by_id(s, "loss_weights")
    weights = w["evidence"]["weights"]
    assert weights["loss_clip"] == 0.25 and weights["loss_mrl"] == 1.0  # the perceiver config's weights
    assert all(v == 0 for k, v in weights.items() if k not in ("loss_clip", "loss_mrl"))


def test_csv_multi_run_with_split_column_and_percent_recall(tmp_path):
    rows = ["run,split,epoch,loss,loss_clip,loss_mrl,R@1,R@5,R@10"]
    for e in range(1, 6):
        rows.append(f"broken,train,{e},{1.25 * 4.852:.4f},4.8520,4.8520,,,")
        rows.append(f"broken,val,{e},{1.25 * 4.85:.4f},4.8500,4.8500,0.1,0.5,1.0")
        clip, mrl = 2 - 0.2 * e, 2.1 - 0.2 * e
        rows.append(f"ok,train,{e},{0.25 * clip + mrl:.4f},{clip:.4f},{mrl:.4f},,,")
        rows.append(f"ok,val,{e},,,,{10 + 5 * e},{40 + 5 * e},{60 + 5 * e}")
    log = tmp_path / "metrics.csv"
    log.write_text("\n".join(rows) + "\n")
    r, s = _logs(tmp_path, log, "--batch-size", "128")
    assert [f["run"] for f in _by_id(s, "loss_at_chance")] == ["broken"]
    assert _by_id(s, "loss_at_chance")[0]["evidence"]["at_chance"][0].get("world_size") == 1
    assert [f["run"] for f in _by_id(s, "loss_flat")] == ["broken"]
    rec = _by_id(s, "recall_at_random")
    assert [f["run"] for f in rec] == ["broken"] and rec[0]["evidence"]["pool_estimate"] == 1000
    assert _by_id(s, "loss_weights")[0]["evidence"]["weights"] == {"loss_clip": 0.25, "loss_mrl": 1.0}


def test_jsonl_log_nested_keys(tmp_path):
    lines = []
    for step in range(0, 50, 10):
        lines.append(json.dumps({"step": step,
                                 "train": {"loss": 0.5 * 3.47 + 3.47, "loss_clip": 3.47, "loss_itm": 3.47}}))
    lines.append("")
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(lines))
    r, s = _logs(tmp_path, log, "--batch-size", "32")
    (chance,) = _by_id(s, "loss_at_chance")
    assert chance["evidence"]["at_chance"][0]["candidates"] == 32
    assert _by_id(s, "components_identical") and _by_id(s, "loss_flat")
    assert _by_id(s, "loss_weights")[0]["evidence"]["weight_sum"] == pytest.approx(1.5, abs=1e-3)


def test_tensorboard_event_file(tmp_path):
    pytest.importorskip("tensorboard",
                        reason="optional extra 'tb' (pip install 'alignment-diagnose[tb]') not installed")
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "tb"
    with SummaryWriter(str(logdir / "perceiver")) as w:
        for step in range(6):
            w.add_scalar("train/loss", 1.25 * 4.8481, step)
            w.add_scalar("train/loss_clip", 4.8481, step)
            w.add_scalar("train/loss_mrl", 4.8481, step)
            w.add_scalar("lr", 1e-3, step)
    r, s = _logs(tmp_path, logdir, "--batch-size", "64")
    assert s["log"]["format"] == "tensorboard" and s["runs"][0]["name"] == "perceiver"
    (chance,) = _by_id(s, "loss_at_chance")
    assert chance["evidence"]["at_chance"][0]["candidates"] == 128
    assert _by_id(s, "loss_flat") and _by_id(s, "components_identical")


@pytest.mark.parametrize("content, args, needle", [
    ("", [], "empty"),
    ("nothing to see here\n", [], "no losses or recalls found"),
    ("Train Loss: 1.0 (CLIP: 0.5)\n", ["--weights", "clip=0.25,mrl=1"], "mrl not among the logged components"),
    ("Train Loss: 1.0 (CLIP: 0.5)\n", ["--weights", "clip"], "expected name=number pairs"),
    ('{"loss": 1}\n{oops\n', [], ":2: not a JSON object"),
])
def test_bad_logs_one_line_exit_2(tmp_path, content, args, needle):
    log = tmp_path / ("x.jsonl" if content.startswith("{") else "x.log")
    log.write_text(content)
    r = runner.invoke(app, ["logs", str(log), *args])
    assert r.exit_code == 2, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr


def test_logs_report_comes_first_and_its_plot_from_a_child_process(tmp_path):
    """The report and summary.json are written before the loss plot, which a child process draws from the curves
    saved beside them; `diagnose report` on the directory draws it again; the command itself imports no matplotlib."""
    import subprocess
    import sys

    from diagnose.engine import plots_child

    log = tmp_path / "metrics.csv"
    log.write_text("step,train_loss\n" + "".join(f"{s},{math.log(16) - 0.01 * s}\n" for s in range(40)))
    out = tmp_path / "out"
    result = runner.invoke(app, ["logs", str(log), "--batch-size", "16", "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    assert plots_child.wait(out, timeout=60) == 0
    report = (out / "report.md").read_text()
    assert "![Logged losses per run](log_losses.png)" in report and (out / "log_losses.png").stat().st_size > 1000
    assert "drawing in the background" not in report
    (out / "log_losses.png").unlink()
    again = runner.invoke(app, ["report", str(out)])
    assert again.exit_code == result.exit_code and (out / "log_losses.png").is_file()
    probe = ("import sys; from typer.testing import CliRunner; from diagnose.cli import app; "
             f"r = CliRunner().invoke(app, ['logs', {str(log)!r}, '--out', {str(tmp_path / 'o2')!r}]); "
             "print(r.exit_code, 'matplotlib' in sys.modules, 'torch' in sys.modules)")
    code, mpl, torch_loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                             check=True).stdout.split()
    assert code in ("0", "1") and mpl == "False" and torch_loaded == "False"
    first = (tmp_path / "o2" / "report.md").read_text()  # as the command left it (its child may have redrawn it)
    assert "Logged losses per run" in first or "drawing in the background" in first
