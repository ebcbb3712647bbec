"""Probe scalars to TensorBoard during a run (rate-limited, alarms as text), read back by `diagnose logs`."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import diagnose
from diagnose.cli import app
from diagnose.integrations.scalars import TensorBoardSink, tag

pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra")


def run_at_chance(logdir, steps=60, B=32):
    """Captions shuffled against their images: nothing to learn, the loss stays at ln(B)."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"image": nn.Linear(16, 16), "text": nn.Linear(16, 16)})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(2048, 16), torch.randn(2048, 16)  # unrelated pairs
    sink = TensorBoardSink(logdir, every=1, max_scalars=40)
    with diagnose.watch(model, opt, alarm="off", batch_size=B) as w:
        sink.attach(w)
        for step in range(steps):
            idx = torch.randint(0, 2048, (B,))
            img, txt = F.normalize(model["image"](x[idx]), dim=-1), F.normalize(model["text"](y[idx]), dim=-1)
            logits = img @ txt.T  # scale 1: the loss starts and stays at ln(B)
            loss = F.cross_entropy(logits, torch.arange(B))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()
    sink.close()
    return sink, w


def test_scalars_are_rate_limited_and_read_back_at_chance(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink, w = run_at_chance(tmp_path / "tb")
    ea = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    tags = ea.Tags()["scalars"]
    loss_tag = tag("loss_split", "loss_clip", "value")
    assert loss_tag in tags and len(ea.Scalars(loss_tag)) == 60
    per_step = {}
    for t in tags:
        for ev in ea.Scalars(t):
            per_step[ev.step] = per_step.get(ev.step, 0) + 1
    assert max(per_step.values()) <= 40 + 40  # max_scalars per write (+ update rows of the step before)
    # per-parameter rows have the lowest priority: written only on steps where the rest left room under the cap
    # (the probes that compute eight steps at once leave some steps light), never on most steps
    per_param = {ev.step for t in tags if t.startswith("diagnose/gradient_flow/") for ev in ea.Scalars(t)}
    assert len(per_param) <= 60 // 4, per_param
    out = tmp_path / "logs-report"
    r = CliRunner().invoke(app, ["logs", str(tmp_path / "tb"), "--out", str(out), "--batch-size", "32"])
    assert r.exit_code == 1, r.output  # 1: findings
    findings = json.loads((out / "summary.json").read_text())["findings"]
    assert ("loss_at_chance", "error") in {(f["id"], f["severity"]) for f in findings}, findings


def test_wandb_offline_gets_the_scalars_and_the_alarm_text(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is in the [wandb] extra")
    from diagnose.integrations.scalars import WandbSink

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="diagnose-test", dir=str(tmp_path), mode="offline")
    logged = []
    real_log = run.log
    monkeypatch.setattr(run, "log", lambda data, step=None,
                        **kw: (logged.append((step, dict(data))), real_log(data, step=step, **kw)))
    torch.manual_seed(0)
    model = nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with diagnose.watch(model, opt, alarm="off", batch_size=8) as w:
        sink = WandbSink(run, every=2, max_scalars=10).attach(w)
        for step in range(6):
            x = F.normalize(model(torch.randn(8, 8)), dim=-1)
            loss = F.cross_entropy(x @ x.T.detach(), torch.arange(8))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss})
            opt.step()
    run.finish()
    # every 2nd step, steps only increase; the watch's close writes the rest (step 5 and the last update rows)
    assert [s for s, _ in logged] == [0, 2, 4, 5]
    assert tag("loss_split", "loss_clip", "value") in logged[-1][1]
    assert all(len(d) <= 10 for _, d in logged) and sink.written <= 40
    assert tag("loss_split", "loss_clip", "value") in logged[0][1]
