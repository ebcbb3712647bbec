"""Collapse probe against NumPy references (RankMe, Wang & Isola alignment/uniformity)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from probes import attach
from probes.stats import collapse_metrics


def _metrics(df, target, step=0):
    sub = df[(df.probe == "collapse") & (df.target == target) & (df.step == step)]
    return dict(zip(sub.metric, sub.value))


def _np_reference(x: np.ndarray) -> dict:
    x = x.astype(np.float64)
    n, d = x.shape
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = xn @ xn.T
    sv = np.linalg.svd(x, compute_uv=False)
    p = sv / sv.sum()
    p = p[p > 0]
    sq = ((xn[:, None, :] - xn[None, :, :]) ** 2).sum(-1)
    off = ~np.eye(n, dtype=bool)
    return {
        "cosine_mean": cos[off].mean(),
        "effective_rank": math.exp(-(p * np.log(p)).sum()),
        "uniformity": math.log(np.exp(-2 * sq[off]).mean()),
        "dim_std_mean": xn.std(0, ddof=1).mean(),
        "norm_mean": np.linalg.norm(x, axis=1).mean(),
        "top_sv_share": sv[0] ** 2 / (sv**2).sum(),
    }


def test_identical_embeddings_collapse_to_rank_one():
    row = torch.randn(1, 16)
    m = {k: float(v) for k, v in collapse_metrics(row.repeat(32, 1)).items()}
    assert m["cosine_mean"] == pytest.approx(1.0, abs=1e-5)
    assert m["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert m["top_sv_share"] == pytest.approx(1.0, abs=1e-6)
    assert m["dim_std_mean"] == pytest.approx(0.0, abs=1e-6)


def test_isotropic_gaussian_is_spread():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 64, generator=g)
    m = {k: float(v) for k, v in collapse_metrics(x).items()}
    assert abs(m["cosine_mean"]) < 3 / math.sqrt(64)
    assert abs(m["cosine_mean"]) < 0.01
    assert m["effective_rank"] > 0.9 * 64
    assert m["dim_std_mean"] == pytest.approx(1 / math.sqrt(64), rel=0.05)


def test_observe_matches_numpy_reference():
    g = torch.Generator().manual_seed(1)
    shared = torch.randn(1, 24, generator=g) * 2.0  # one dominant direction, as in CLIP features
    img = torch.randn(40, 24, generator=g) + shared
    txt = img + 0.3 * torch.randn(40, 24, generator=g)
    model = nn.Linear(2, 2)
    with attach(model, probes=["collapse"], strict=True) as session:
        session.observe(0, embeddings={"image": img, "text": txt})
    df = session.records
    for name, x in (("image", img), ("text", txt)):
        got, ref = _metrics(df, name), _np_reference(x.numpy())
        for key, want in ref.items():
            assert got[key] == pytest.approx(want, rel=1e-4, abs=1e-5), (name, key)
    xn = img.double() / img.double().norm(dim=1, keepdim=True)
    yn = txt.double() / txt.double().norm(dim=1, keepdim=True)
    want = ((xn - yn) ** 2).sum(1).mean().item()
    assert _metrics(df, "image~text")["alignment"] == pytest.approx(want, rel=1e-5)
    cos = (xn @ yn.T).numpy()
    off = cos[~np.eye(len(cos), dtype=bool)].mean()  # mean cosine over the non-matching pairs
    assert _metrics(df, "image~text")["negative_cosine"] == pytest.approx(off, rel=1e-4, abs=1e-6)


def test_expensive_metrics_follow_schedule():
    model = nn.Linear(2, 2)
    x = torch.randn(16, 8)
    with attach(model, probes=["collapse"], expensive_every=3, strict=True) as session:
        for step in range(4):
            session.observe(step, embeddings={"image": x})
    df = session.records
    rank_steps = sorted(df[df.metric == "effective_rank"].step)
    assert rank_steps == [0, 3]
    assert sorted(df[df.metric == "cosine_mean"].step) == [0, 1, 2, 3]


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 12)
        self.head = nn.Linear(12, 4)

    def forward(self, x):  # (B, T, 8)
        return self.head(self.proj(x).mean(1))


def test_watched_intermediate_output_is_mean_pooled():
    torch.manual_seed(0)
    model = Encoder()
    seen = {}
    handle = model.proj.register_forward_hook(lambda m, a, o: seen.setdefault("out", o.detach().clone()))
    x = torch.randn(10, 5, 8)
    with attach(model, probes="cheap", outputs={"tokens": "proj"}, strict=True) as session:
        model(x).sum().backward()
        session.observe(0)
    handle.remove()
    got = _metrics(session.records, "tokens")
    ref = _np_reference(seen["out"].mean(1).numpy())
    assert got["cosine_mean"] == pytest.approx(ref["cosine_mean"], rel=1e-4, abs=1e-6)
    assert got["effective_rank"] == pytest.approx(ref["effective_rank"], rel=1e-4)
    assert got["n"] == 10 and got["dim"] == 12


def test_watch_outputs_method_and_unknown_module():
    model = Encoder()
    with attach(model, probes=["gradient_flow"], strict=True) as session:
        session.watch_outputs({"z": "proj"})
        with pytest.raises(KeyError):
            session.watch_outputs({"bad": "nope"})
        model(torch.randn(4, 3, 8)).sum().backward()
        session.observe(0)
    assert "z" in set(session.records[session.records.probe == "collapse"].target)


def test_column_norm_dev_reads_a_normalisation_over_the_batch_axis():
    import torch.nn.functional as F

    from probes import attach

    x = torch.randn(16, 8)
    for dim, over_batch in ((0, True), (-1, False)):
        with attach(torch.nn.Linear(2, 2), None, probes=["collapse"], strict=True) as session:
            session.observe(0, embeddings={"image": F.normalize(x, dim=dim)})
        df = session.records
        dev = float(df[df.metric == "column_norm_dev"].value.iloc[0])
        assert (dev < 1e-5) == over_batch, dev
