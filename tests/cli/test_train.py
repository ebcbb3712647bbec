import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from diagnose.cli.app import app
from diagnose.lab.checkpoint_files import load_into, load_state_dict
from reference_models import build_model, load_config

runner = CliRunner()
SMALL = ["--scale", "tiny", "--set", "dataset.num_train=16", "--set", "dataset.num_val=16",
         "--set", "dataset.batch_size=8", "--quiet"]


def _train(out, *extra):
    return runner.invoke(app, ["train", "--config", "perceiver", "--steps", "4", "--out", str(out), *SMALL, *extra])


def test_train_writes_checkpoint_that_loads_back_bit_identically(tmp_path):
    result = _train(tmp_path / "run")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for name in ("model.safetensors", "model.yaml", "metrics.csv", "summary.json", "checkpoint-epoch1.safetensors"):
        assert (run / name).is_file(), name
    cfg = load_config(str(run / "model.yaml"))
    assert cfg.scale == "tiny" and cfg.vision_encoder.use_perceiver
    model = build_model(cfg)
    load_into(model, load_state_dict(run / "model.safetensors"), "model.safetensors")
    saved = load_file(str(run / "model.safetensors"))
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[key]), key
    summary = json.loads((run / "summary.json").read_text())
    r = summary["runs"][0]
    assert r["steps"] == 4 and r["batch_size"] == 8 and r["scale"] == "tiny"
    assert r["chance_loss"] == pytest.approx(2.0794, abs=1e-4)  # ln 8
    assert r["retrieval"]["chance@1"] == pytest.approx(1 / 16)
    assert {"r@1", "r@5", "r@10", "i2t_r@1", "t2i_r@1"} <= set(r["retrieval"])
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["step"]) == [0, 1, 2, 3]
    assert {"loss_clip", "loss_mrl", "total", "lr", "logit_scale"} <= set(metrics.columns)


def test_same_seed_same_losses_different_seed_different(tmp_path):
    assert _train(tmp_path / "a").exit_code == 0
    assert _train(tmp_path / "b").exit_code == 0
    assert _train(tmp_path / "c", "--seed", "5").exit_code == 0
    a, b, c = (pd.read_csv(tmp_path / x / "metrics.csv") for x in "abc")
    pd.testing.assert_frame_equal(a, b)
    assert not a["loss_clip"].equals(c["loss_clip"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "nope"], "unknown config 'nope': expected one of perceiver, direct"),
        (["--config", "/no/such.yaml"], "/no/such.yaml: config file not found"),
        (["--config", "direct", "--set", "optimization.learning_rate=1"], "did you mean 'optimization.lr'"),
        (["--config", "direct", "--set", "dataset.batch_size=big"], "key 'dataset.batch_size' = 'big': expected int"),
        (["--config", "direct", "--scale", "huge"], "--scale 'huge': expected one of full, small, tiny"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_unknown_key_in_file_names_file_and_closest_key(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("optimization:\n  lrr: 0.1\n")
    result = runner.invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: unknown key 'optimization.lrr'; did you mean 'optimization.lr'?" in result.stderr


def test_checkpoint_mismatch_lists_keys(tmp_path):
    from diagnose.core.errors import ConfigError
    from diagnose.lab.checkpoint_files import save_checkpoint

    direct = build_model(load_config("direct", ["model.projection_dim=64", "losses.mrl_dims=[64]"]))
    save_checkpoint(tmp_path / "d.safetensors", direct, load_config("direct"))
    perceiver = build_model(load_config("perceiver",
                                        ["model.projection_dim=64", "losses.mrl_dims=[64]",
                                         "vision_encoder.perceiver_num_layers=1"]))
    with pytest.raises(ConfigError) as err:
        load_into(perceiver, load_state_dict(tmp_path / "d.safetensors"), "d.safetensors")
    message = str(err.value)
    assert "missing vision.final_projector.bias" in message
    assert "unexpected vision.pool.scorer.bias" in message
    assert "shape mismatch vision.projector.weight (64, 1024) vs (1024, 1024)" in message


# --- live output: progress bars and alarms while the runs go (diagnose.lab.live, console.LiveRuns) ---------
DIVERGING = ["gradflow", "--config", "perceiver", "--scale", "tiny", "--steps", "12", "--set", "dataset.num_train=64",
             "--set", "dataset.num_val=32", "--set", "dataset.batch_size=16", "--set", "optimization.lr=1e30"]


def _alarm_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("diagnose alarm at step ")]


def test_an_alarm_is_printed_when_it_fires_not_when_the_run_ends(tmp_path):
    # lr 1e30 turns the weights non-finite at the first update: the nonfinite_values alarm fires within
    # the first evaluations, long before step 12; its line comes before the verdicts and the report line
    result = runner.invoke(app, [*DIVERGING, "--out", str(tmp_path / "g")])
    assert result.exit_code == 1, result.output  # error findings
    lines = result.output.splitlines()
    alarms = _alarm_lines(result.output)
    assert alarms and "nonfinite_values" in alarms[0], result.output
    step = int(alarms[0].split("diagnose alarm at step ")[1].split(":")[0])
    assert step < 11  # fired during the run (its last step is 11)
    first_verdict = next(i for i, line in enumerate(lines) if line.startswith("perceiver"))
    report = next(i for i, line in enumerate(lines) if line.startswith("report: "))
    assert lines.index(alarms[0]) < first_verdict < report


def test_quiet_prints_no_alarm_and_no_progress(tmp_path, monkeypatch):
    from io import StringIO

    from rich.console import Console

    from diagnose.cli import console as console_mod

    screen = StringIO()  # a terminal: the bar would be drawn here
    monkeypatch.setattr(console_mod, "console", Console(file=screen, force_terminal=True, width=120))
    result = runner.invoke(app, [*DIVERGING, "--out", str(tmp_path / "g"), "--quiet"])
    assert result.exit_code == 1, result.output
    assert _alarm_lines(result.output) == [] and screen.getvalue() == ""


def test_a_terminal_shows_a_bar_per_run_with_the_loss_against_ln_b(tmp_path, monkeypatch):
    from io import StringIO

    from rich.console import Console

    from diagnose.cli import console as console_mod

    screen = StringIO()
    monkeypatch.setattr(console_mod, "console", Console(file=screen, force_terminal=True, width=160))
    result = runner.invoke(app, [*DIVERGING[:6], "6", *DIVERGING[7:-2], "--out", str(tmp_path / "g")])
    assert result.exit_code in (0, 1), result.output
    drawn = screen.getvalue()
    assert "perceiver" in drawn and "vs ln(B) 2.773" in drawn  # ln 16
    assert "6/6" in drawn


def test_worker_processes_send_their_events_back_to_the_listener():
    from diagnose.lab import live
    from diagnose.lab.executors import Job, LocalExecutor

    got = []
    events = [{"kind": "alarm", "run": f"r{i}", "step": i, "line": f"line {i}"} for i in range(3)]
    with LocalExecutor(2) as ex:
        with live.listening(got.append):
            ex.run([Job(f"r{i}", live.emit, (e,)) for i, e in enumerate(events)])
        assert sorted(got, key=lambda e: e["step"]) == events
        got.clear()
        ex.run([Job(f"q{i}", live.emit, (e,)) for i, e in enumerate(events)])  # nobody listens: nothing sent
    assert got == []
