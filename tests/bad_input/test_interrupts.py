"""Interrupted, failed and out-of-space runs: the previous complete directory or none, one line.
Unexpected exceptions: exit 3, one line, the traceback only with --debug. Files honour the umask."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from .conftest import TINY, snapshot


def _previous(tmp_path):
    prev = tmp_path / "run"
    prev.mkdir()
    (prev / "summary.json").write_text('{"previous": true}\n')
    return prev, snapshot(prev)


def _no_staging_left(parent):
    return not [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_sigint_mid_write_keeps_previous(tmp_path):
    """A real `diagnose train` process gets SIGINT while its staging directory is being written
    (an epoch checkpoint every 4 steps); the run directory must be the previous one, untouched."""
    prev, before = _previous(tmp_path)
    out = tmp_path / "run"
    # Python's SIGINT handler set explicitly: a test runner started in the background passes SIGINT on ignored
    main = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from diagnose.cli import main; main()")
    cmd = [sys.executable, "-c", main, "train", "--config", "direct", *TINY, "--steps", "100000", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            staging = [p for p in tmp_path.iterdir() if p.name.startswith(".run.tmp-")]
            if staging and list(staging[0].glob("checkpoint-epoch2*.safetensors")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("error: interrupted: nothing half-written")
    assert "left as it was" in lines[0] and snapshot(prev) == before
    assert _no_staging_left(tmp_path)


@pytest.mark.parametrize("had_previous", [True, False], ids=["previous_kept", "none_created"])
def test_interrupt_in_process_during_training(cli, tmp_path, monkeypatch, had_previous):
    if had_previous:
        prev, before = _previous(tmp_path)
    import importlib

    train_mod = importlib.import_module("reference_models.train")  # the package exports a function of that name

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "evaluate_retrieval", ctrl_c)  # after the epoch checkpoints were staged
    out = tmp_path / "run"
    cli.bad(["train", "--config", "direct", *TINY, "--steps", "8", "--out", out], code=130,
            contains="run left as it was" if had_previous else "run not created", unchanged=False)
    if had_previous:
        assert snapshot(prev) == before
    else:
        assert not out.exists()
    assert _no_staging_left(tmp_path)


def _checkpoint(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"proj.weight": torch.randn(4, 4), "latents": torch.randn(4, 4)}, str(path))
    return path


def test_full_disk_keeps_previous(cli, tmp_path, monkeypatch):
    """ENOSPC on the second file of the report: exit 2, one line, the previous directory untouched."""
    ckpt = _checkpoint(tmp_path)
    prev, before = _previous(tmp_path)
    real_fdopen, calls = os.fdopen, []

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd, *a, **k):
        calls.append(fd)
        fh = real_fdopen(fd, *a, **k)
        return Full(fh) if len(calls) == 2 else fh

    monkeypatch.setattr(os, "fdopen", fdopen)
    cli.bad(["checkpoint", ckpt, "--out", prev], contains="No space left on device", unchanged=False)
    assert len(calls) == 2
    assert snapshot(prev) == before and _no_staging_left(tmp_path)


def test_failure_inside_the_run_leaves_nothing(cli, tmp_path, monkeypatch):
    """An exception after some files were staged: no run directory, no staging sibling, exit 3."""
    from diagnose.engine import rundir

    def broken(*a, **k):
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(rundir.markdown, "render", broken)
    cli.bad(["gradflow", "--config", "direct", *TINY, "--steps", "2", "--out", tmp_path / "g"], code=3,
            contains="RuntimeError: renderer broke (run with --debug for the traceback)", unchanged=False)
    assert not (tmp_path / "g").exists() and _no_staging_left(tmp_path)


def test_unexpected_exception_is_exit_3_and_debug_shows_it(cli, tmp_path, monkeypatch):
    from diagnose.cli.commands import lint as lint_cmd

    def boom(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(lint_cmd, "lint_paths", boom)
    (tmp_path / "m.py").write_text("x = 1\n")
    cli.bad(["lint", tmp_path / "m.py"], code=3,
            contains="error: RuntimeError: boom (run with --debug for the traceback)")
    debug = cli(["lint", tmp_path / "m.py", "--debug"])
    assert debug.exit_code == 3 and "Traceback" in debug.stderr and "RuntimeError: boom" in debug.stderr


def test_findings_keep_exit_1(cli, tmp_path):
    (tmp_path / "m.py").write_text("import torch\nclass M(torch.nn.Module):\n    def __init__(self):\n"
                                   "        super().__init__()\n        self.latents = "
                                   "torch.nn.Parameter(torch.zeros(4, 8))\n")
    result = cli(["lint", tmp_path / "m.py"])
    assert result.exit_code == 1 and "DL002" in result.stdout


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_files_honour_the_umask(cli, tmp_path, mask):
    ckpt = _checkpoint(tmp_path)
    old = os.umask(mask)
    try:
        result = cli(["checkpoint", ckpt, "--out", tmp_path / "ck"])
    finally:
        os.umask(old)
    assert result.exit_code in (0, 1), result.stderr
    assert (tmp_path / "ck").stat().st_mode & 0o777 == 0o777 & ~mask
    for f in (tmp_path / "ck").iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f


def test_rerun_replaces_files_and_keeps_others(cli, tmp_path):
    """A second report into the same directory replaces its files and keeps what it did not write
    (an ablation inside a compare directory)."""
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "ck"
    assert cli(["checkpoint", ckpt, "--out", out]).exit_code in (0, 1)
    (out / "ablation").mkdir()
    (out / "ablation" / "report.md").write_text("kept")
    (out / "summary.json").write_text("stale")
    assert cli(["checkpoint", ckpt, "--out", out]).exit_code in (0, 1)
    assert (out / "ablation" / "report.md").read_text() == "kept"
    assert (out / "summary.json").read_text().startswith("{")
    assert _no_staging_left(tmp_path)


def test_out_through_a_symlink_stays_a_symlink(cli, tmp_path):
    ckpt = _checkpoint(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert cli(["checkpoint", ckpt, "--out", tmp_path / "link"]).exit_code in (0, 1)
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "summary.json").is_file()
    assert _no_staging_left(tmp_path)


def test_ctrl_c_during_the_swap_is_held_until_it_is_complete(tmp_path, monkeypatch):
    """SIGINT arriving between the two renames is delivered after them: the new directory is in
    place, the previous one is gone, and the interrupt says the run was complete."""
    from diagnose.core import staging

    # Ctrl-C must be live in this process (a job started in the background by a shell ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    prev, _ = _previous(tmp_path)
    real_rename = os.rename

    def rename_with_sigint(src, dst):
        os.kill(os.getpid(), signal.SIGINT)  # blocked here: pending until the swap is over
        real_rename(src, dst)

    with pytest.raises(staging.Interrupted, match="was completely written"):
        with staging.staged(prev) as tmp:
            (tmp / "summary.json").write_text('{"new": true}\n')
            monkeypatch.setattr(staging.os, "rename", rename_with_sigint)
    monkeypatch.undo()
    signal.signal(signal.SIGINT, previous)
    assert (prev / "summary.json").read_text() == '{"new": true}\n'
    assert _no_staging_left(tmp_path)


# Ctrl-C while the CLI is still loading: SIGINT raises KeyboardInterrupt wherever the interpreter is, here
# inside an import. A meta path finder raises it when the named module starts loading, in a fresh
# process started the way each entry point starts (the pip console script, python -m diagnose,
# python -m diagnose.cli).
_CTRL_C_IN_IMPORT = """
import sys
class _CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise KeyboardInterrupt
sys.meta_path.insert(0, _CtrlC())
"""
ENTRY_POINTS = {
    "console_script": "import sys; from diagnose.cli import main; sys.argv[0] = 'diagnose'; sys.exit(main())",
    "python_m_diagnose": "import runpy; runpy.run_module('diagnose', run_name='__main__', alter_sys=True)",
    "python_m_diagnose_cli": "import runpy; runpy.run_module('diagnose.cli', run_name='__main__', alter_sys=True)",
}


@pytest.mark.parametrize("module", ["typer", "diagnose.cli.commands.logs"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_ctrl_c_while_the_cli_loads_is_one_line(tmp_path, entry, module):
    (tmp_path / "m.csv").write_text("step,loss\n0,4.1\n1,4.0\n")
    before = snapshot(tmp_path)
    code = _CTRL_C_IN_IMPORT.format(module=module) + ENTRY_POINTS[entry]
    proc = subprocess.run([sys.executable, "-c", code, "logs", "m.csv", "--out", "report"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["error: interrupted: no output written"], proc.stderr[-2000:]
    assert snapshot(tmp_path) == before
    if module != "typer":
        return
    # the same process without the interrupt runs the command (the hook itself breaks nothing)
    ok = subprocess.run([sys.executable, "-c", _CTRL_C_IN_IMPORT.format(module="no.such.module") + ENTRY_POINTS[entry],
                         "logs", "m.csv", "--out", "report", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode in (0, 1) and (tmp_path / "report" / "summary.json").is_file(), ok.stderr[-2000:]
