"""`gather_with_grad` / `local_grad_in_gather` without a process group: a gather written by hand in the loss lines
(`diagnose.engine.interventions.hand_gather`) gets this step's features back in place of their cut copies."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import diagnose
from tests.engine.test_interventions import DIN, Towers

W, N = 2, 8


def data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(W * N, DIN, generator=g), torch.randn(W * N, DIN, generator=g)


def gathered(shards, how: str):
    if how == "detach":  # what dist.all_gather hands back, written by hand
        return torch.cat([s.detach().clone() for s in shards])
    out = [torch.zeros_like(s) for s in shards]
    if how == "copy_of_detached":  # into buffers, grad enabled
        for o, s in zip(out, shards):
            o.copy_(s.detach())
        return torch.cat(out)
    with torch.no_grad():
        for o, s in zip(out, shards):
            o.copy_(s)
    return torch.cat(out)


def run(model, opt, w, steps, how):
    x, t = data()
    grads = []
    for i in range(steps):
        outs = [model(x[r * N:(r + 1) * N], t[r * N:(r + 1) * N]) for r in range(W)]
        all_img, all_txt = gathered([o[0] for o in outs], how), gathered([o[1] for o in outs], how)
        logits = model.logit_scale.exp() * all_img @ all_txt.t()
        loss = F.cross_entropy(logits, torch.arange(W * N))
        opt.zero_grad()
        if loss.requires_grad:
            loss.backward()
        grads.append(None if model.image.weight.grad is None else model.image.weight.grad.clone())
        w.observe(i, losses={"clip": loss}, logits=logits, batch_size=N, candidates=W * N)
        opt.step()
    return grads


@pytest.mark.parametrize("fix", ["gather_with_grad", "local_grad_in_gather"])
@pytest.mark.parametrize("how", ["detach", "copy_under_no_grad", "copy_of_detached"])
def test_a_hand_written_gather_gets_the_features_back_with_their_gradient(under_ablation, fix, how):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation(fix)
    with diagnose.watch(model, opt, batch_size=N) as w:
        grads = run(model, opt, w, 2, how)
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    # the same loss with the features themselves concatenated: the gradient it gives (2 steps x 2 gathers x 2 blocks)
    torch.manual_seed(0)
    ref = Towers()
    x, t = data()
    outs = [ref(x[r * N:(r + 1) * N], t[r * N:(r + 1) * N]) for r in range(W)]
    logits = ref.logit_scale.exp() * torch.cat([o[0] for o in outs]) @ torch.cat([o[1] for o in outs]).t()
    F.cross_entropy(logits, torch.arange(W * N)).backward()
    assert torch.allclose(grads[0], ref.image.weight.grad, atol=1e-6)
    assert "8 block(s) of hand-written gathers" in json.loads(open(spec["status"]).read())["applied"][0]


def test_a_bank_of_earlier_steps_and_features_without_gradient_stay_copies(under_ablation):
    """Detached features of an earlier micro-batch (their graph freed by its backward) and a forward under no_grad
    are not put back: the run goes on without a second backward through a freed graph."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("gather_with_grad")
    x, t = data()
    bank = []
    with pytest.raises(SystemExit):
        with diagnose.watch(model, opt, batch_size=N) as w:
            for i in range(3):
                img, txt = model(x[:N], t[:N])
                with torch.no_grad():
                    _, other = model(x[N:], t[N:])
                cand = torch.cat(bank + [txt, other.detach()])
                logits = model.logit_scale.exp() * img @ cand.t()
                loss = F.cross_entropy(logits, torch.arange(N) + len(bank) * N)
                opt.zero_grad()
                loss.backward()
                w.observe(i, losses={"clip": loss}, logits=logits, batch_size=N, candidates=len(cand))
                bank.append(txt.detach())  # after observe, before the next forward: an earlier step's features
                opt.step()
    assert "no concatenation in the loss lines of copies cut from this step's features" in \
        json.loads(open(spec["status"]).read())["not_applicable"]
