"""Attention and latent rules (`diagnose.core.rules.attention`): attention entropy, latents (symmetric,
not moving, scale normalised away), a softmax over the batch axis."""

from __future__ import annotations

from diagnose.core import rules as R

from .harness import LATENT, B, N, ctx, frame, ids, latents, one, rec, tail


def test_attention_entropy_evidence():
    df = frame(rec("softmax_entropy", "enc.attn", "entropy_mean", tail(0.6, 0.995)),
               rec("softmax_entropy", "dec.attn", "entropy_mean", tail(0.4, 0.01)),
               rec("softmax_entropy", "mid.attn", "entropy_mean", 0.5))
    found = R.attention_entropy(df, ctx())
    assert sorted(ids(found)) == ["attention_entropy_collapse", "attention_uniform"]
    u, c = one(found, "attention_uniform"), one(found, "attention_entropy_collapse")
    assert u.severity == c.severity == "warning"
    assert u.target == "enc.attn" and u.evidence["modules"] == {"enc.attn": {"end": 0.995, "first": 0.6}}
    assert c.target == "dec.attn" and c.evidence["modules"] == {"dec.attn": {"end": 0.01, "first": 0.4}}


def test_latent_findings_evidence():
    df = latents(identical_rows=7.0, between_latent_std=0.0, cosine_mean=1.0, drift=[0.0] * 25)
    found = R.latent_symmetry(df, ctx()) + R.latents_not_moving(df, ctx())
    assert sorted(ids(found)) == ["latents_not_moving", "latents_symmetric"]  # symmetric supersedes similar
    s = one(found, "latents_symmetric")
    assert s.severity == "error" and s.target == LATENT
    assert s.evidence == {"identical_rows_end": 7.0, "between_latent_std_end": 0.0, "steps": [0, N - 1]}
    m = one(found, "latents_not_moving")
    assert m.severity == "warning" and m.evidence == {"drift_end": 0.0, "steps": [0, 24]}

    sim = one(R.latent_symmetry(latents(cosine_mean=[0.2] + [0.995] * (N - 1)), ctx()), "latents_similar")
    assert sim.severity == "warning"
    assert sim.evidence == {"cosine_mean_end": 0.995, "cosine_mean_first": 0.2, "steps": [0, N - 1]}


def test_latent_scale_normalised_evidence():
    df = frame(latents(rms=[0.02] * N), rec("latent_stats", LATENT, "norm_gain", {3: 50.0, 8: 2.0}),
               rec("latent_stats", LATENT, "post_norm_rms", {3: 1.0, 8: 1.0}))
    f = one(R.latent_scale_normalised(df, ctx()), "latent_scale_normalised")
    assert f.severity == "info" and f.target == LATENT
    assert f.evidence == {"latent_rms_first": 0.02, "norm_gain_first": 50.0, "post_norm_rms_first": 1.0, "step": 3}


def _softmax(axis: int, size: int, ndim: int = 2):
    return frame(rec("softmax_entropy", "vision.pool.softmax", "axis", axis),
                 rec("softmax_entropy", "vision.pool.softmax", "axis_size", size),
                 rec("softmax_entropy", "vision.pool.softmax", "ndim", ndim))


def test_softmax_over_batch_fires_on_axis_0_of_batch_size():
    f = one(R.softmax_over_batch(_softmax(0, B), ctx()), "softmax_over_batch")
    assert f.target == "vision.pool.softmax" and f.evidence["axis_size"] == B


def test_softmax_over_batch_quiet_on_the_token_axis_or_another_size():
    assert R.softmax_over_batch(_softmax(1, 145), ctx()) == []
    assert R.softmax_over_batch(_softmax(0, B + 1), ctx()) == []
    assert R.softmax_over_batch(_softmax(0, B, ndim=1), ctx()) == []


def test_softmax_axis_is_recorded_by_the_probe():
    import torch
    from torch import nn

    from probes import attach

    class Pool(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.softmax = nn.Softmax(dim=dim)

        def forward(self, x):
            return self.softmax(x)

    for dim, axis, size in ((0, 0, 4), (1, 1, 7)):
        m = Pool(dim)
        with attach(m, probes=["softmax_entropy"]) as s:
            m(torch.randn(4, 7))
            s.observe(0)
        df = s.records
        got = {r.metric: r.value for r in df[df.target == "softmax"].itertuples()}
        assert got["axis"] == axis and got["axis_size"] == size and got["ndim"] == 2
