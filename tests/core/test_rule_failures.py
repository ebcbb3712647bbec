"""A rule that raises (a bug of ours) leaves its findings out and says so; it never ends the user's run. And a
logged loss of thousands of nats (a loss scale left on the logged value) is read without an overflow."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import diagnose
from diagnose.core.rules import loss as loss_rules
from reports.markdown import root_cause_lines


def _run(logged_times: float = 1.0, steps: int = 30):
    torch.manual_seed(0)
    enc = torch.nn.ModuleDict({"image": torch.nn.Linear(12, 8), "text": torch.nn.Linear(12, 8)})
    opt = torch.optim.SGD(enc.parameters(), lr=0.0)  # stays at chance: the loss rules have something to say
    g = torch.Generator().manual_seed(1)
    with diagnose.watch(enc, opt, out=None, alarm="off", batch_size=16, budget=None) as w:
        for step in range(steps):
            x, t = torch.randn(16, 12, generator=g), torch.randn(16, 12, generator=g)
            img, txt = F.normalize(enc["image"](x), dim=-1), F.normalize(enc["text"](t), dim=-1)
            logits = img @ txt.t()
            loss = F.cross_entropy(logits, torch.arange(16))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss * logged_times}, image_embeds=img, text_embeds=txt, logits=logits)
            opt.step()
    return w.result().to_dict()


def test_a_logged_loss_of_thousands_of_nats_is_read_without_overflow():
    out = _run(logged_times=4000.0)  # strict in the tests: an overflow in a rule would raise here
    assert "rule_failures" not in out["runs"][0]
    assert out["findings"]


def test_a_rule_that_raises_is_left_out_and_named_and_the_others_run(monkeypatch, capsys):
    monkeypatch.delenv("DIAGNOSE_STRICT_RULES", raising=False)

    def broken(self, df, ctx):
        raise OverflowError("math range error")

    monkeypatch.setattr(loss_rules.LossAtChance, "check", broken)
    out = _run()
    run = out["runs"][0]
    assert run["rule_failures"] == ["LossAtChance: OverflowError: math range error"]
    assert "loss_at_chance" not in {f["id"] for f in out["findings"]}
    assert out["findings"]  # the other rules' findings are there
    text = "\n".join(root_cause_lines(run, out["findings"]))
    assert "rules that failed on these records" in text and "LossAtChance: OverflowError" in text
    assert "diagnose: rule LossAtChance: OverflowError: math range error" in capsys.readouterr().err


def test_strict_mode_raises(monkeypatch):
    def broken(self, df, ctx):
        raise OverflowError("math range error")

    monkeypatch.setattr(loss_rules.LossAtChance, "check", broken)
    with pytest.raises(OverflowError):
        _run(steps=5)
