"""Closing a watch writes report.md, summary.json and the records at once; the plots come from a detached
child process, and the directory is whole at every moment: the report names only files that are there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import diagnose
from diagnose.core.staging import Pinned, staged
from diagnose.engine import plots_child

B = 16


def _run(out: Path, steps: int = 12, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
    text = nn.Linear(6, 8)
    opt = torch.optim.AdamW([*model.parameters(), *text.parameters()], lr=1e-2)
    x, t = torch.randn(64, 8), torch.randn(64, 6)
    with diagnose.watch(model, opt, out=out, name="run", alarm="off", probes="cheap", **kwargs) as w:
        for step in range(steps):
            idx = torch.randint(0, 64, (B,))
            img, txt = F.normalize(model(x[idx]), dim=-1), F.normalize(text(t[idx]), dim=-1)
            logits = 10 * img @ txt.t()
            loss = F.cross_entropy(logits, torch.arange(B))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, logits=logits, batch_size=B)
            opt.step()
    return w


def _named_files(report: str) -> list[str]:
    return re.findall(r"\]\(([^)]+\.png)\)", report)


def test_close_writes_the_report_first_and_the_plots_arrive_whole(tmp_path):
    out = tmp_path / "run"
    _run(out)
    first = (out / "report.md").read_text()
    assert json.loads((out / "summary.json").read_text())["runs"][0]["steps"] == 12
    assert (out / "records.csv.gz").is_file()
    assert "rendering in the background" in first and f"diagnose report {out}" in first
    assert _named_files(first) == []  # the first report names no plot
    assert plots_child.wait(out, 120) == 0
    final = (out / "report.md").read_text()
    named = _named_files(final)
    assert "losses.png" in named and "gradient_flow.png" in named
    assert all((out / name).stat().st_size > 1000 for name in named)
    assert "rendering in the background" not in final
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    # the same report as the CLI's inline rendering of the same directory
    from typer.testing import CliRunner

    from diagnose.cli import app

    r = CliRunner().invoke(app, ["report", str(out)])
    assert r.exit_code in (0, 1), r.output  # 1: this random model's findings
    assert (out / "report.md").read_text() == final


def test_inline_and_deferred_plots(tmp_path):
    _run(tmp_path / "inline", plots="inline")
    assert "losses.png" in _named_files((tmp_path / "inline" / "report.md").read_text())
    assert plots_child.wait(tmp_path / "inline") is None  # no child was started
    _run(tmp_path / "deferred", plots="deferred")
    report = (tmp_path / "deferred" / "report.md").read_text()
    assert "Plots: not rendered" in report and not list((tmp_path / "deferred").glob("*.png"))
    with pytest.raises(ValueError, match="plots='sometimes'"):
        diagnose.watch(nn.Linear(2, 2), plots="sometimes")


def test_renderer_leaves_a_newer_run_alone(tmp_path):
    out = tmp_path / "run"
    _run(out, plots="deferred")
    stale = plots_child._digest(b"another run's summary")
    assert plots_child.render_into(out, stale) == "replaced"
    assert not list(out.glob("*.png")) and "Plots: not rendered" in (out / "report.md").read_text()


def test_pinned_writes_land_in_the_directory_opened_not_its_successor(tmp_path):
    out = tmp_path / "run"
    with staged(out) as tmp:
        (tmp / "report.md").write_text("first")
    with Pinned(out) as first:
        with staged(out, keep_existing=False) as tmp:  # a newer run takes the path
            (tmp / "report.md").write_text("second")
        with pytest.raises(OSError):  # the first directory was removed: nothing to write into
            first.write("losses.png", b"png")
    assert (out / "report.md").read_text() == "second" and not (out / "losses.png").exists()
