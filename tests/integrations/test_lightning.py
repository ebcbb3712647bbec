"""`DiagnoseCallback` in a real `lightning.Trainer` (CPU, a few dozen steps): a healthy two-tower model and
the same model with a learning rate that collapses its embeddings."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

L = pytest.importorskip("lightning", reason="lightning is in the [lightning] extra (CI installs it)")

from diagnose.integrations.lightning import DiagnoseCallback  # noqa: E402

N, B, D, DT, E = 1024, 32, 32, 24, 32


def paired(seed=0):
    g = torch.Generator().manual_seed(seed)
    concepts = torch.randn(N, 8, generator=g)
    img = concepts @ torch.randn(8, D, generator=g) + 0.3 * torch.randn(N, D, generator=g)
    txt = concepts @ torch.randn(8, DT, generator=g) + 0.1 * torch.randn(N, DT, generator=g)
    return torch.utils.data.TensorDataset(img, txt)


class TwoTower(L.LightningModule):
    def __init__(self, lr=1e-3):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.lr = lr

    def embed(self, batch):
        img, txt = batch
        return F.normalize(self.image(img), dim=-1), F.normalize(self.text(txt), dim=-1)

    def training_step(self, batch, batch_idx):
        img, txt = self.embed(batch)
        logits = self.logit_scale.exp() * img @ txt.T
        labels = torch.arange(len(img))
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        self.log("train_loss", loss)
        return {"loss": loss, "image_embeds": img, "text_embeds": txt, "logits": logits,
                "logit_scale": self.logit_scale.exp()}

    def validation_step(self, batch, batch_idx):
        img, txt = self.embed(batch)
        return {"image_embeds": img, "text_embeds": txt}

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def fit(tmp_path, lr, steps=40, **cb_kwargs):
    torch.manual_seed(0)
    ds = paired()
    train = torch.utils.data.DataLoader(ds, batch_size=B, shuffle=True, drop_last=True)
    val = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(256)), batch_size=128)
    cb = DiagnoseCallback(out=tmp_path / "run", expensive_every=5, **cb_kwargs)
    trainer = L.Trainer(max_steps=steps, callbacks=[cb], accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=2,
                        val_check_interval=steps, check_val_every_n_epoch=None, num_sanity_val_steps=0)
    trainer.fit(TwoTower(lr), train, val)
    return cb, trainer, json.loads((tmp_path / "run" / "summary.json").read_text())


def test_healthy_module_learns_with_no_error_finding(tmp_path):
    cb, _, s = fit(tmp_path, lr=1e-3)
    run = s["runs"][0]
    assert run["kind"] == "watch" and run["steps"] == 40
    assert not [f for f in s["findings"] if f["severity"] == "error"], s["findings"]
    assert run["final_loss"]["loss_contrastive"] < math.log(B)
    assert run["retrieval"]["r@1"] > 10 / 256  # held-out R@1 from validation_step outputs
    recs = cb.last_watch.records
    assert {"gradient_flow", "collapse", "loss_split", "softmax_entropy"} <= set(recs["probe"])
    assert len(recs[recs["metric"] == "update_to_param"])  # measured after Lightning's optimizer step
    assert "training_step" not in cb.last_watch.model.__dict__  # the wrapper is gone


def test_an_early_contraction_that_recovers_is_not_stopped(tmp_path):
    # lr 0.3: the loss sits near ln(B) for a few steps, then the run learns (R@1 far above chance); the
    # README's stop_on_alarm must not end it (it did at step 5 before alarms needed persistence)
    cb, trainer, s = fit(tmp_path, lr=0.3, steps=60, stop_on_alarm=True, background=False, budget=None)
    run = s["runs"][0]
    assert run["alarms"] == [] and run["steps"] == 60 and run["verdict"]["learned"], run


def test_learning_rate_that_collapses_embeddings_is_named_and_can_stop_training(tmp_path):
    # rules inside observe (background=False) every 5 steps (budget=None): the stop comes at the step of
    # the first alarm, not when the rule process answers (on these ~10 ms steps that can be after the last step)
    cb, trainer, s = fit(tmp_path, lr=1.0, steps=60, stop_on_alarm=True, background=False, budget=None)
    run = s["runs"][0]
    assert run["root_causes"][0]["cause"] == "learning_rate_too_high", run["root_causes"]
    assert run["alarms"], "an error alarm fired"
    assert run["steps"] < 60 and trainer.global_step < 60  # stop_on_alarm ended fit early
