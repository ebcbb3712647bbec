"""split_gather_by_rank: a gathered concatenation of [image; text] blocks split rank by rank under the fix."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import diagnose

from .test_interventions import B, Towers, batch

WORLD = 4


def _steps(w, model, opt, x, t, steps: int, together: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Ranks simulated in one process: each shard through the model, gathered in rank order (torch.cat, as
    torch.distributed.nn.all_gather + cat returns them), image and text together in one gather or apart."""
    seen = []
    for i in range(steps):
        shards = [model(xs, ts) for xs, ts in zip(x.chunk(WORLD), t.chunk(WORLD))]
        if together:
            all_img, all_txt = torch.cat([torch.cat([a, b]) for a, b in shards]).chunk(2, dim=0)
        else:
            all_img, all_txt = torch.cat([a for a, _ in shards]), torch.cat([b for _, b in shards])
        seen.append((all_img.detach(), all_txt.detach()))
        logits = model.logit_scale.exp() * all_img @ all_txt.t()
        loss = 0.5 * (F.cross_entropy(logits, torch.arange(B)) + F.cross_entropy(logits.t(), torch.arange(B)))
        opt.zero_grad()
        loss.backward()
        w.observe(i, losses={"clip": loss}, embeddings={"image": all_img, "text": all_txt}, logits=logits)
        opt.step()
    return seen


def test_the_gathered_halves_are_each_ranks_images_and_each_ranks_texts(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay: the layouts compare on one model
    x, t = batch()
    spec = under_ablation("split_gather_by_rank")
    with diagnose.watch(model, opt, batch_size=B) as w:
        seen = _steps(w, model, opt, x, t, 2, together=True)
        assert "4 ranks' [4; 4] blocks" in w.control.fix.did[0]
    img, txt = model(x, t)
    for all_img, all_txt in seen:
        assert torch.allclose(all_img, img.detach(), atol=1e-6) and torch.allclose(all_txt, txt.detach(), atol=1e-6)
    assert json.loads(open(spec["status"]).read())["reached"]


def test_without_the_fix_the_halves_mix_the_towers_and_the_fix_is_not_applicable_to_separate_gathers(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:  # no fix: the middle-row split of [img_0; txt_0; img_1; ...]
        (all_img, _), = _steps(w, model, opt, x, t, 1, together=True)
    img, txt = model(x, t)
    assert torch.allclose(all_img[4:8], txt[:4].detach(), atol=1e-6)
    spec = under_ablation("split_gather_by_rank")
    with pytest.raises(SystemExit):
        with diagnose.watch(model, opt, batch_size=B) as w:
            _steps(w, model, opt, x, t, 3, together=False)
    assert "no concatenation of gathered" in json.loads(open(spec["status"]).read())["not_applicable"]
