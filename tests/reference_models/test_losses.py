import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reference_models.config import LossConfig
from reference_models.losses import AlignmentLoss, MRLLoss, symmetric_infonce


@pytest.mark.parametrize("B", [2, 7, 64, 128])
def test_infonce_at_uniform_logits_is_ln_b(B):
    assert abs(float(symmetric_infonce(torch.zeros(B, B, dtype=torch.float64))) - math.log(B)) < 1e-6
    # collapsed embeddings (every image and every caption the same vector) give uniform logits
    # whatever the temperature
    img = F.normalize(torch.ones(B, 16, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.ones(B, 16, dtype=torch.float64) + 0.5, dim=-1)
    loss = AlignmentLoss(LossConfig(mrl=0.0))(img, txt, torch.tensor(50.0, dtype=torch.float64))
    assert abs(float(loss.components["loss_clip"]) - math.log(B)) < 1e-6
    assert loss.chance == pytest.approx(math.log(B))


def _numpy_infonce(img, txt, scale):
    logits = scale * img @ txt.T

    def ce(m):
        m = m - m.max(axis=1, keepdims=True)
        logp = m - np.log(np.exp(m).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(logp))

    return 0.5 * (ce(logits) + ce(logits.T))


def test_mrl_renormalises_each_prefix():
    torch.manual_seed(1)
    img = F.normalize(torch.randn(8, 32, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(8, 32, dtype=torch.float64), dim=-1)
    per_dim = MRLLoss([4, 8, 32], sample_single=False)(img, txt, torch.tensor(10.0, dtype=torch.float64))
    assert list(per_dim) == [4, 8, 32]
    for d, value in per_dim.items():
        a, b = img[:, :d].numpy(), txt[:, :d].numpy()
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        assert float(value) == pytest.approx(_numpy_infonce(a, b, 10.0), abs=1e-9)
    # without re-normalisation the prefix loss would differ
    raw = img[:, :4].numpy() @ txt[:, :4].numpy().T
    assert _numpy_infonce(img[:, :4].numpy(), txt[:, :4].numpy(), 10.0) != pytest.approx(float(per_dim[4]), abs=1e-3)
    assert raw.shape == (8, 8)


def test_mrl_samples_one_dim_when_asked():
    img = F.normalize(torch.randn(8, 32), dim=-1)
    txt = F.normalize(torch.randn(8, 32), dim=-1)
    mrl = MRLLoss([4, 8, 16, 32], sample_single=True)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        per_dim = mrl(img, txt, torch.tensor(10.0), g)
        assert len(per_dim) == 1
        seen |= set(per_dim)
    assert seen == {4, 8, 16, 32}


def test_components_weights_and_logging_modes():
    img = F.normalize(torch.randn(16, 32), dim=-1)
    txt = F.normalize(torch.randn(16, 32), dim=-1)
    scale = torch.tensor(14.0)
    cfg = LossConfig(contrastive=0.25, mrl=1.0, mrl_dims=[4, 8, 32], sample_single_mrl_dim=False, mrl_log_mode="seed")
    out = AlignmentLoss(cfg)(img, txt, scale)
    comp = {k: float(v) for k, v in out.components.items()}
    assert float(out.total) == pytest.approx(0.25 * comp["loss_clip"] + 1.0 * comp["loss_mrl"], rel=1e-6)
    assert out.weights == {"loss_clip": 0.25, "loss_mrl": 1.0}
    # seed logging: the sum over evaluated dims, three times the objective's mean here
    assert out.logged["loss_mrl"] == pytest.approx(3 * comp["loss_mrl"], rel=1e-5)
    honest = AlignmentLoss(LossConfig(mrl_dims=[4, 8, 32], sample_single_mrl_dim=False,
                                      mrl_log_mode="mean"))(img, txt, scale)
    assert honest.logged["loss_mrl"] == pytest.approx(comp["loss_mrl"], rel=1e-5)
    assert {"loss_mrl@4", "loss_mrl@8", "loss_mrl@32"} <= set(honest.logged)
    # with one sampled dim the two modes log the same number (the seed's case)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = AlignmentLoss(LossConfig(mrl_dims=[4, 8, 32], mrl_log_mode="seed"))(img, txt, scale, g1)
    b = AlignmentLoss(LossConfig(mrl_dims=[4, 8, 32], mrl_log_mode="mean"))(img, txt, scale, g2)
    assert a.logged["loss_mrl"] == pytest.approx(b.logged["loss_mrl"])
    assert b.logged["mrl_dim"] in (4.0, 8.0, 32.0)
