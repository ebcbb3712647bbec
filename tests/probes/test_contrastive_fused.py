"""The contrastive probe reads both towers in shared ops (stacked embeddings, the pair CKA from the rows' Gram
matrices, one tensor per step for the transfer): every reading equals its plain per-tensor computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from probes import attach
from probes.contrastive import PAIRS_MIN_ROWS, Contrastive, _cka, _derangement


def _plain(img: torch.Tensor, txt: torch.Tensor, z: torch.Tensor) -> dict[tuple[str, str], float]:
    """The readings written out one tensor at a time (the probe's definitions)."""
    b = len(z)
    diag = torch.arange(b)
    lse_r, lse_c = z.logsumexp(1), z.logsumexp(0)
    i2t, t2i = (lse_r - z.diagonal()).mean(), (lse_c - z.diagonal()).mean()
    out = {("logits", "acc_diagonal"): (z.argmax(1) == diag).float().mean(), ("logits", "loss_i2t"): i2t,
           ("logits", "loss_t2i"): t2i, ("logits", "loss_diagonal"): 0.5 * (i2t + t2i),
           ("logits", "loss_zero_i2t"): (lse_r - z[:, 0]).mean(), ("logits", "loss_zero_t2i"): (lse_c - z[0]).mean()}
    for name, x in (("image", img), ("text", txt)):
        n = x.norm(dim=-1)
        out[(name, "norm_cv")] = n.std() / n.mean()
    if b >= PAIRS_MIN_ROWS:
        x, y = (F.normalize(t, dim=-1) for t in (img, txt))
        x, y = x - x.mean(0), y - y.mean(0)
        out[("pairs", "cka")] = _cka(x, y)
        out[("pairs", "cka_null")] = _cka(x, y[_derangement(b, y.device)])
    return {k: float(v) for k, v in out.items()}


@pytest.mark.parametrize("rows,dim", [(16, 64), (8, 8), (32, 16), (4, 32)])
def test_every_reading_equals_its_plain_computation(rows, dim):
    g = torch.Generator().manual_seed(rows + dim)
    img = torch.randn(rows, dim, generator=g) * (1 + torch.rand(rows, 1, generator=g))
    txt = torch.randn(rows, dim, generator=g)
    z = 5 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
    with attach(torch.nn.Linear(2, 2), None, probes=[Contrastive()], strict=True, expensive_every=10 ** 6) as s:
        s.observe(1, embeddings={"image": img.requires_grad_(), "text": txt}, logits={"i2t": z})
    rec = s.records
    got = {(t, m): v for t, m, v in zip(rec["target"], rec["metric"], rec["value"])}
    want = _plain(img.detach(), txt, z)
    for key, value in want.items():
        # the CKA comes from the rows' Gram matrices when rows <= features: the same number up to float rounding
        assert got[key] == pytest.approx(value, rel=1e-5 if key[0] == "pairs" else 1e-7, abs=1e-7), key
    assert got[("image", "requires_grad")] == 1.0 and got[("text", "requires_grad")] == 0.0
    assert (("pairs", "cka") in got) == (rows >= PAIRS_MIN_ROWS)


def test_no_spread_gives_no_pair_reading_on_the_fused_path():
    z = torch.randn(16, 16)
    with attach(torch.nn.Linear(2, 2), None, probes=[Contrastive()], strict=True, expensive_every=10 ** 6) as s:
        s.observe(1, embeddings={"image": torch.zeros(16, 32), "text": torch.randn(16, 32)}, logits={"i2t": z})
    rec = s.records
    cka = rec[(rec["target"] == "pairs")]["value"]
    assert len(cka) == 2 and all(math.isnan(v) for v in cka)


def test_readings_batched_over_steps_are_each_steps_own():
    g = torch.Generator().manual_seed(7)
    steps = [(torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)) for _ in range(11)]
    steps.insert(5, (torch.randn(12, 32, generator=g), torch.randn(12, 32, generator=g)))  # a smaller last batch
    with attach(torch.nn.Linear(2, 2), None, probes=[Contrastive()], strict=True, expensive_every=10 ** 6) as s:
        for i, (img, txt) in enumerate(steps):
            z = 5 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
            s.observe(i + 1, embeddings={"image": img, "text": txt}, logits={"i2t": z})
            if i == 2:  # read mid-run: the held steps are computed first
                mid = s.records
                assert set(mid[mid["metric"] == "cka"]["step"]) == {1, 2, 3}
    rec = s.records
    for i, (img, txt) in enumerate(steps):
        z = 5 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
        at = rec[rec["step"] == i + 1]
        got = {(t, m): v for t, m, v in zip(at["target"], at["metric"], at["value"])}
        assert len(got) == len(set(got)) and len(at) == len(got)  # each reading once per step
        for key, value in _plain(img, txt, z).items():
            assert got[key] == pytest.approx(value, rel=1e-5 if key[0] == "pairs" else 1e-6, abs=1e-7), (i, key)
