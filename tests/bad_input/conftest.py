"""Shared checks of the bad-input contract: exit code, exactly one line on stderr, no traceback,
and nothing left behind in the working directory (the tests run inside tmp_path)."""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diagnose.cli import app

# settings that make a reference run take about a second on a CPU (see tests/conftest.py)
TINY = ["--scale", "tiny", "--quiet", "--set", "dataset.num_train=64", "--set", "dataset.num_val=32",
        "--set", "dataset.batch_size=16"]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under root with its size and mtime: what 'nothing changed' means."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


class Cli:
    """Runs `diagnose` in-process inside a scratch working directory."""

    def __init__(self, work: Path):
        self.work = work
        self.runner = CliRunner()

    def __call__(self, args, env=None):
        return self.runner.invoke(app, [str(a) for a in args], env=env)

    def bad(self, args, code=2, contains="", env=None, unchanged=True):
        """Invoke, then assert the contract; returns the result."""
        before = snapshot(self.work)
        result = self(args, env)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == code, (result.exit_code, result.stdout[-2000:], result.stderr[-2000:])
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ") or lines[0].startswith("interrupted"), lines
        assert contains in lines[0], lines[0]
        assert "Traceback" not in result.stderr + result.stdout
        if unchanged:
            assert snapshot(self.work) == before, "files were created or modified"
        return result


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return Cli(tmp_path)
