"""Latent stats and loss split probes against NumPy references."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from probes import attach


class LatentModel(nn.Module):
    """Perceiver-style: learned latents, normalised before cross-attention to the inputs."""

    def __init__(self, n_latents=6, d=16, init_std=0.02):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(n_latents, d) * init_std)
        self.norm_latents = nn.LayerNorm(d)
        self.norm_inputs = nn.LayerNorm(d)
        self.out = nn.Linear(d, d)

    def forward(self, x):  # (B, T, D) -> (B, D)
        lat = self.norm_latents(self.latents.unsqueeze(0).expand(x.shape[0], -1, -1))  # (B, L, D)
        attn = torch.softmax(lat @ self.norm_inputs(x).transpose(1, 2), dim=-1)
        return self.out(attn @ x).mean(1)


def _values(df, probe, step=0):
    sub = df[(df.probe == probe) & (df.step == step)]
    return {(t, m): v for t, m, v in zip(sub.target, sub.metric, sub.value)}


def test_latent_stats_match_numpy_and_norm_is_found():
    torch.manual_seed(0)
    model = LatentModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    init = model.latents.detach().numpy().copy()
    with attach(model, optimizer=opt, probes=["latent_stats"], expensive_every=2, strict=True) as session:
        for step in range(3):
            opt.zero_grad()
            current = model.latents.detach().numpy().copy()
            model(torch.randn(4, 5, 16)).pow(2).sum().backward()
            session.observe(step)
            opt.step()
    df = session.records
    got = _values(df, "latent_stats", 2)
    x = current.astype(np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    off = ~np.eye(len(x), dtype=bool)
    assert got[("latents", "rms")] == pytest.approx(np.sqrt((x**2).mean()), rel=1e-5)
    assert got[("latents", "norm_mean")] == pytest.approx(np.linalg.norm(x, axis=1).mean(), rel=1e-5)
    assert got[("latents", "norm_min")] == pytest.approx(np.linalg.norm(x, axis=1).min(), rel=1e-5)
    assert got[("latents", "mean")] == pytest.approx(x.mean(1).mean(), abs=1e-7)
    assert got[("latents", "std")] == pytest.approx(x.std(1).mean(), rel=1e-5)
    assert got[("latents", "cosine_mean")] == pytest.approx((xn @ xn.T)[off].mean(), abs=1e-6)
    assert got[("latents", "drift")] == pytest.approx(np.linalg.norm(x - init) / np.linalg.norm(init), rel=1e-5)
    assert got[("latents", "drift")] > 0
    assert got[("latents->norm_latents", "consumed_by_norm")] == 1.0
    assert got[("norm_latents", "input_rms")] == pytest.approx(got[("latents", "rms")], rel=1e-5)
    # at init the 0.02-scale latents are normalised to ~1 by the LayerNorm that consumes them
    first = _values(df, "latent_stats", 0)
    assert first[("latents", "post_norm_rms")] == pytest.approx(1.0, abs=0.05)
    assert first[("latents", "norm_gain")] == pytest.approx(1.0 / first[("latents", "rms")], rel=0.05)
    # expensive metrics only on expensive steps; drift starts at 0
    assert ("latents", "cosine_mean") not in _values(df, "latent_stats", 1)
    assert _values(df, "latent_stats", 0)[("latents", "drift")] == 0.0


def test_identical_latents_and_explicit_names():
    model = LatentModel()
    with torch.no_grad():
        model.latents.copy_(torch.ones(6, 16) * 0.02)
        model.out.weight.normal_()
    with attach(model, probes=["latent_stats"], latents=["out.weight"], strict=True) as session:
        session.observe(0)
    got = _values(session.records, "latent_stats")
    assert ("latents", "rms") not in got and ("out.weight", "rms") in got
    with attach(model, probes=["latent_stats"], strict=True) as session:
        session.observe(0)
    got = _values(session.records, "latent_stats")
    assert got[("latents", "identical_rows")] == 5
    assert got[("latents", "cosine_mean")] == pytest.approx(1.0, abs=1e-6)
    assert got[("latents", "between_latent_std")] == 0.0
    with pytest.raises(KeyError):
        attach(model, probes=["latent_stats"], latents=["nope"])


def _loss_session(losses, weights, **kw):
    with attach(nn.Linear(1, 1), probes=["loss_split"], strict=True) as session:
        session.observe(0, losses=losses, weights=weights, **kw)
    return _values(session.records, "loss_split")


def test_loss_split_contributions_and_chance():
    B = 32
    clip, mrl = torch.tensor(3.0), torch.tensor(math.log(B))
    got = _loss_session(
        {"loss_clip": clip, "loss_mrl": mrl, "total": 0.25 * clip + mrl},
        {"loss_clip": 0.25, "loss_mrl": 1.0},
        batch_size=B,
        extras={"mrl_dim": 512, "logit_scale": torch.tensor(14.3)},
    )
    assert got[("loss_clip", "weighted")] == pytest.approx(0.75)
    assert got[("loss_clip", "chance")] == pytest.approx(math.log(B))
    assert got[("loss_mrl", "ratio_to_chance")] == pytest.approx(1.0)
    assert got[("total", "total_minus_weighted_sum")] == pytest.approx(0.0, abs=1e-6)
    assert got[("loss_clip~loss_mrl", "components_identical")] == 0.0
    assert got[("extras", "mrl_dim")] == 512
    assert got[("extras", "logit_scale")] == pytest.approx(14.3, rel=1e-6)
    assert got[("extras", "batch_size")] == B


def test_loss_split_detects_misstated_total_and_identical_components():
    mrl = torch.tensor(5.5)
    # the seed's logging: loss_mrl reported as the full loss, so the two logged numbers coincide
    got = _loss_session(
        {"loss_clip": 2.0, "loss_mrl": mrl, "loss_mrl_logged": mrl, "total": 4.0},
        {"loss_clip": 0.25, "loss_mrl": 1.0},
        chance={"loss_clip": 4.0},
    )
    assert got[("total", "total_minus_weighted_sum")] == pytest.approx(4.0 - (0.5 + 5.5))
    assert got[("loss_mrl~loss_mrl_logged", "components_identical")] == 1.0
    assert got[("loss_clip~loss_mrl", "components_identical")] == 0.0
    assert got[("loss_clip", "ratio_to_chance")] == pytest.approx(0.5)
    assert ("loss_mrl", "chance") not in got  # no batch size: no default chance
