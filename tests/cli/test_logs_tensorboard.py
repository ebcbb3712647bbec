"""`diagnose logs` on TensorBoard directories written by our own `TensorBoardSink`: the probe records are read
back and the record rules run on them (a collapsing run is named offline), alarm texts become findings,
and every loss keeps the name the watch gave it (watch -> TensorBoardSink -> logs; CSV -> logs)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import diagnose
from diagnose.cli import app
from diagnose.core.logs import read_log
from diagnose.engine.watcher import canonical_name
from diagnose.integrations.scalars import TensorBoardSink

pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra")
runner = CliRunner()
N, B, D, DT, E = 512, 32, 32, 24, 32


def _logs(tmp_path, path, *args):
    out = tmp_path / "report"
    r = runner.invoke(app, ["logs", str(path), "--out", str(out), *args])
    assert r.exit_code in (0, 1), r.output
    return r, json.loads((out / "summary.json").read_text())


def _data():
    """Image features dominated by one shared direction (3x the content), as CLIP features are; captions
    carry the same 8 concepts."""
    g = torch.Generator().manual_seed(0)
    concepts = torch.randn(N, 8, generator=g)
    x = 3.0 * torch.randn(D, generator=g) + 0.3 * concepts @ torch.randn(8, D, generator=g)
    y = concepts @ torch.randn(8, DT, generator=g) + 0.1 * torch.randn(N, DT, generator=g)
    return x, y


def watched_run(logdir, lr, steps=30, **watch_kwargs):
    """Two small towers trained with AdamW under `diagnose.watch`, written to TensorBoard by our sink.
    At lr 0.1 the shared input direction takes over the image embeddings (mean cosine 0.99, loss at
    ln B); at lr 1e-2 the same run learns (loss ~0.4)."""
    torch.manual_seed(0)
    x, y = _data()
    image = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, E))
    text = nn.Sequential(nn.Linear(DT, 64), nn.ReLU(), nn.Linear(64, E))
    model = nn.ModuleDict({"image": image, "text": text})
    model.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sink = TensorBoardSink(logdir, every=5)
    with diagnose.watch(model, opt, alarm="off", batch_size=B, **watch_kwargs) as w:
        sink.attach(w)
        for step in range(steps):
            idx = torch.randint(0, N, (B,))
            img, txt = F.normalize(image(x[idx]), dim=-1), F.normalize(text(y[idx]), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            labels = torch.arange(B)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      inputs=x[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
    sink.close()
    return w


def test_collapsing_run_is_named_offline_from_our_own_tensorboard_tags(tmp_path):
    w = watched_run(tmp_path / "tb", lr=0.1)
    assert "embedding_collapse" in {f["id"] for f in w.result().findings}  # what the watch itself found
    r, s = _logs(tmp_path, tmp_path / "tb")
    assert r.exit_code == 1
    collapse = [f for f in s["findings"] if f["id"] == "embedding_collapse" and f["severity"] == "error"]
    assert collapse and collapse[0]["target"] == "image" and collapse[0]["evidence"]["cosine_mean_end"] >= 0.95
    causes = [c["cause"] for c in s["runs"][0]["root_causes"]]
    assert causes[0] == "learning_rate_too_high" and "embedding_collapse" in causes, causes
    (lr,) = [f for f in s["findings"] if f["id"] == "learning_rate_high"]
    assert lr["evidence"]["lr_peak"] == pytest.approx(0.1) and lr["evidence"]["peak_step"] == 0
    assert s["runs"][0]["steps"] == 29  # the sink's close writes the last steps' rows too
    assert "no root cause implicated" not in r.output


def test_same_run_at_a_sane_lr_names_neither(tmp_path):
    watched_run(tmp_path / "tb", lr=1e-2)
    r, s = _logs(tmp_path, tmp_path / "tb")
    ids = {f["id"] for f in s["findings"] if f["severity"] != "info"}
    assert not {"embedding_collapse", "learning_rate_high", "loss_at_chance"} & ids, ids
    # no error at all: the record rules read only series that reach the end of the run (the sink drops the
    # contrastive rows of most written steps; their early values against the final loss gave a false
    # loss_not_about_pairs before)
    assert r.exit_code == 0 and not [f for f in s["findings"] if f["severity"] == "error"], s["findings"]
    assert any("stop before the end of the run" in n for n in s["log"]["notes"])


def test_alarm_texts_are_read_back_as_findings_with_their_step(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    for step in range(20):
        writer.add_scalar("diagnose/loss_split/loss_clip/value", math.log(B) + 0.01 * (-1) ** step, step)
    # the sink's alarm format (diagnose.integrations.scalars.ScalarSink.__call__)
    writer.add_text("diagnose/alarms", "step 9: no_gradient (error) text: 3 parameter tensors get no gradient.", 9)
    writer.add_text("diagnose/alarms", "something else", 12)
    writer.close()
    r, s = _logs(tmp_path, tmp_path / "tb", "--batch-size", str(B))
    (f,) = [f for f in s["findings"] if f["id"] == "no_gradient"]
    assert f["severity"] == "error" and f["target"] == "text" and f["evidence"]["alarm_step"] == 9
    assert "step 9" in f["message"]
    assert s["runs"][0]["root_causes"][0]["cause"] == "no_gradient_path"
    assert any("not in the sink's format" in n for n in s["log"]["notes"])


# --- one name per loss ----------------------------------------------------------------------------------

def _tiny_watch(logdir, losses_of):
    torch.manual_seed(0)
    model = nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sink = TensorBoardSink(logdir, every=1)
    with diagnose.watch(model, opt, alarm="off", batch_size=8) as w:
        sink.attach(w)
        for step in range(6):
            z = F.normalize(model(torch.randn(8, 8)), dim=-1)
            loss = F.cross_entropy(z @ z.T.detach() * 5, torch.arange(8))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses=losses_of(loss))
            opt.step()
    sink.close()
    return w


@pytest.mark.parametrize("losses_of", [
    lambda loss: {"loss": loss},  # a lone loss: loss_contrastive
    lambda loss: {"clip": loss},
    lambda loss: {"clip": loss, "mrl": loss / 2, "total": 0.25 * loss + loss / 2},
], ids=["lone", "named", "components"])
def test_watch_to_tensorboard_to_logs_keeps_every_name(tmp_path, losses_of):
    w = _tiny_watch(tmp_path / "tb", losses_of)
    watched = set(w.result().runs[0].final_loss)
    read = set(read_log(tmp_path / "tb").frame["metric"]) - {"lr", "logit_scale"}
    assert read == watched, (read, watched)


def test_csv_loss_columns_get_the_watch_names(tmp_path):
    lone = tmp_path / "lone.csv"
    lone.write_text("step,loss\n" + "".join(f"{s},{4.1 - 0.01 * s}\n" for s in range(10)))
    assert set(read_log(lone).frame["metric"]) == {canonical_name("loss", 1)} == {"loss_contrastive"}
    both = tmp_path / "both.csv"
    both.write_text("step,loss,clip_loss,mrl_loss\n" + "".join(f"{s},1.5,1.0,1.25\n" for s in range(10)))
    assert set(read_log(both).frame["metric"]) == {canonical_name(k, 3) for k in ("total", "clip", "mrl")}
    _, s = _logs(tmp_path, lone)
    assert list(s["runs"][0]["final_loss"]) == ["loss_contrastive"]
