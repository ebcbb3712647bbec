"""Where each row's pair sits among rectangular logits' columns outside torch.distributed, read from the loss
lines' operations (`diagnose.engine.interventions.pair_layout`), and `diagonal_targets` acting on it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import diagnose
from diagnose.engine.interventions.ops import watch_ops
from diagnose.engine.interventions.pair_layout import handlers, located_pairs
from tests.engine.test_interventions import DIN, Towers

W, N = 4, 8  # simulated ranks x rows per rank


def embeddings(rows: int = W * N, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(rows, 6, generator=g, requires_grad=False), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(rows, 6, generator=g), dim=-1).requires_grad_()
    return img * 1.0, txt * 1.0  # non-leaf, as a model's outputs


def locate(build):
    undo = watch_ops(handlers())
    try:
        return build()
    finally:
        undo()


def test_a_slice_of_the_batch_is_paired_with_the_columns_at_its_offset():
    img, txt = embeddings()
    out = locate(lambda: [located_pairs(torch.tensor(2.0) * img[r * N:(r + 1) * N] @ txt.t()) for r in range(W)])
    for r, pairs in enumerate(out):
        assert pairs.tolist() == list(range(r * N, (r + 1) * N))
    chunks = locate(lambda: [located_pairs(F.normalize(c, dim=-1) @ txt.T / 0.07) for c in img.chunk(W)])
    assert [p[0].item() for p in chunks] == [0, N, 2 * N, 3 * N]


def test_a_block_of_a_hand_written_gather_is_paired_at_its_offset():
    shards = [embeddings(N, seed=r) for r in range(W)]

    def build():
        all_txt = torch.cat([t for _, t in shards])
        all_img = torch.cat([i for i, _ in shards])
        return ([located_pairs(20.0 * i @ all_txt.t()) for i, _ in shards],
                [located_pairs(t @ all_img.t() * 3.0) for _, t in shards])
    per_image, per_text = locate(build)
    for r in range(W):
        assert per_image[r][0].item() == r * N and per_text[r][0].item() == r * N


def test_the_one_block_carrying_the_gradient_among_a_bank_of_detached_ones():
    img, txt = embeddings(N)
    bank = [torch.randn(N, 6), torch.randn(N, 6)]  # earlier micro-batches, detached
    pairs = locate(lambda: located_pairs(img @ torch.cat(bank + [txt]).t()))
    assert pairs.tolist() == list(range(2 * N, 3 * N))


def test_no_location_where_the_operations_do_not_say():
    img, txt = embeddings(N)
    interleaved = torch.stack([txt, torch.randn(N, 6)], dim=1).reshape(2 * N, 6)  # [pos_0, neg_0, pos_1, ...]
    assert locate(lambda: located_pairs(img @ interleaved.t())) is None
    both_grad = torch.cat([txt, txt * 2.0])  # two blocks carry gradient: which one is the pair?
    assert locate(lambda: located_pairs(img @ both_grad.t())) is None
    unscaled = locate(lambda: img[:N // 2] @ txt.t() + torch.randn(N // 2, N))  # not a product of rows and columns
    assert located_pairs(unscaled) is None
    assert located_pairs(img[:N // 2] @ txt.t()) is None  # no mode: nothing marked


def simulated_gather_steps(w, model, opt, x, t, steps, given):
    """Two ranks in one process: each rank's rows against both ranks' columns, the ranks' losses averaged."""
    losses = []
    for i in range(steps):
        img, txt = model(x, t)
        scale = model.logit_scale.exp()
        n = len(x) // 2
        parts = []
        for r in range(2):
            logits = scale * img[r * n:(r + 1) * n] @ txt.t()
            parts.append(F.cross_entropy(logits, given(r, n)))
        loss = torch.stack(parts).mean()
        losses.append((loss.item(), img.detach(), txt.detach(), scale.detach()))
        opt.zero_grad()
        loss.backward()
        w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                  batch_size=len(x), candidates=len(x))
        opt.step()
    return losses


def test_diagonal_targets_gives_a_simulated_ranks_rows_their_offset_pairs(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("diagonal_targets")
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2 * N, DIN, generator=g), torch.randn(2 * N, DIN, generator=g)
    orig = F.cross_entropy
    with diagnose.watch(model, opt, batch_size=2 * N) as w:
        seen = simulated_gather_steps(w, model, opt, x, t, 2, lambda r, n: torch.arange(n))  # no rank offset
    for loss, img, txt, scale in seen:
        want = torch.stack([orig(scale * img[r * N:(r + 1) * N] @ txt.t(), torch.arange(N) + r * N)
                            for r in range(2)]).mean()
        assert loss == pytest.approx(float(want), rel=1e-5)
    applied = json.loads(open(spec["status"]).read())["applied"][0]
    assert "replaced the targets of 2 cross-entropy call(s)" in applied  # rank 1's, both steps; rank 0's were right
    assert "pairs located from the loss lines" in applied


def test_diagonal_targets_says_when_rectangular_logits_do_not_locate_the_pairs(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("diagonal_targets")
    g = torch.Generator().manual_seed(1)
    x, t, negatives = (torch.randn(N, DIN, generator=g) for _ in range(3))
    with pytest.raises(SystemExit):
        with diagnose.watch(model, opt, batch_size=N) as w:
            for i in range(3):
                img, txt = model(x, t)
                _, neg = model(x, negatives)
                cand = torch.stack([txt, neg], dim=1).reshape(2 * N, -1)  # [pos_0, neg_0, pos_1, neg_1, ...]
                logits = model.logit_scale.exp() * img @ cand.t()
                loss = F.cross_entropy(logits, torch.arange(N))
                opt.zero_grad()
                loss.backward()
                w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          candidates=2 * N)
                opt.step()
    assert "layout does not say where each row's pair is" in \
        json.loads(open(spec["status"]).read())["not_applicable"]
