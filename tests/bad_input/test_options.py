"""Common options of every command: checked before any work, one line on stderr, exit 2."""

import pytest

from .conftest import TINY

TRAINING = {  # commands that run the reference model, with their minimal arguments
    "train": ["train", "--config", "direct"],
    "gradflow": ["gradflow", "--config", "direct"],
    "compare": ["compare", "perceiver", "direct"],
    "ablate": ["ablate", "--config", "perceiver"],
}


@pytest.mark.parametrize("command", list(TRAINING))
@pytest.mark.parametrize("device, message", [
    ("bogus", "--device 'bogus': expected a torch device"),
    ("cuda:7", "--device 'cuda:7'"),
    ("xla", "--device 'xla'"),
])
def test_device(cli, command, device, message):
    cli.bad([*TRAINING[command], *TINY, "--device", device], contains=message)


@pytest.mark.parametrize("command", list(TRAINING))
@pytest.mark.parametrize("seed", ["4294967296", "-1"])
def test_seed_out_of_range(cli, command, seed):
    cli.bad([*TRAINING[command], *TINY, "--seed", seed], contains=f"--seed {seed}: expected an integer in [0, 2^32)")


@pytest.mark.parametrize("command", list(TRAINING))
@pytest.mark.parametrize("steps", ["0", "-1"])
def test_steps_below_one_is_one_line(cli, command, steps):
    cli.bad([*TRAINING[command], *TINY, "--steps", steps], contains="'--steps'")


@pytest.mark.parametrize("args, message", [
    (["ablate", "--config", "perceiver", "--workers", "0"], "'--workers'"),
    (["train", "--config", "direct", "--epochs", "0"], "'--epochs'"),
    (["train", "--config", "direct", "--steps", "abc"], "'--steps'"),
    (["train", "--config", "direct", "--no-such-option"], "--no-such-option"),
    (["train"], "'--config'"),
    (["no-such-command"], "no-such-command"),
    (["gradflow", "--config", "direct", "--fail-on", "fatal"], "--fail-on 'fatal'"),
    (["train", "--config", "direct", "--steps", "2", "--epochs", "1"], "give one, not both"),
])
def test_usage_errors_are_one_line(cli, args, message):
    cli.bad(args, contains=message)


def _out_cases(tmp_path):
    (tmp_path / "a_file").write_text("x")
    return {
        "file": (tmp_path / "a_file", "exists and is not a directory"),
        "under_file": (tmp_path / "a_file" / "sub", "is a file, expected a directory"),
        "proc": ("/proc/diagnose-out", "under /proc"),
        "cwd": (".", "is the current directory or contains it"),
    }


OUT_COMMANDS = {
    **TRAINING,
    "checkpoint": ["checkpoint", "CKPT"],
    "logs": ["logs", "LOG"],
}


@pytest.mark.parametrize("command", list(OUT_COMMANDS))
@pytest.mark.parametrize("case", ["file", "under_file", "proc", "cwd"])
def test_out_not_writable(cli, tmp_path, command, case):
    out, message = _out_cases(tmp_path)[case]
    ckpt, log = tmp_path / "w.pt", tmp_path / "log.csv"
    args = [str(ckpt) if a == "CKPT" else str(log) if a == "LOG" else a for a in OUT_COMMANDS[command]]
    cli.bad([*args, "--out", out], contains=message)


def test_out_read_only_directory(cli, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories; /proc and file cases cover the check for root")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        cli.bad(["train", "--config", "direct", *TINY, "--out", ro / "run"], contains="cannot write in")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("args", [
    ["gradflow", "--config", "direct", *TINY, "--steps", "1"],
    ["checkpoint", "CKPT", "--out", "ck"],
    ["logs", "LOG", "--out", "lg"],
    ["report", "RUN"],
])
def test_step_summary_is_a_directory(cli, tmp_path, args):
    (tmp_path / "summary_dir").mkdir()
    (tmp_path / "RUN").mkdir()
    args = [str(tmp_path / "w.pt") if a == "CKPT" else str(tmp_path / "log.csv") if a == "LOG" else a for a in args]
    cli.bad(args, env={"GITHUB_STEP_SUMMARY": str(tmp_path / "summary_dir")}, contains="GITHUB_STEP_SUMMARY")


@pytest.mark.parametrize("command", ["logs", "checkpoint", "lint", "report", "train", "compare"])
def test_every_command_accepts_quiet_and_debug(cli, command):
    result = cli([command, "--help"])
    assert result.exit_code == 0
    assert "--quiet" in result.stdout and "--debug" in result.stdout
