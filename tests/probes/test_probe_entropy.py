"""Softmax entropy probe: nn.Softmax, nn.MultiheadAttention, SDPA, HF CLIP, contrastive logits."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probes import attach


def _get(df, target, metric, step=0):
    sub = df[(df.probe == "softmax_entropy") & (df.target == target) & (df.metric == metric) & (df.step == step)]
    assert len(sub) == 1, (target, metric, len(sub))
    return float(sub.value.iloc[0])


def _np_entropy(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    return -plogp.sum(-1) / math.log(p.shape[-1])


class ScoredAttention(nn.Module):
    """Attention whose scores come from the test: (B, H, Q, K) -> softmax over K."""

    def __init__(self):
        super().__init__()
        self.softmax = nn.Softmax(dim=-1)
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, scores):
        return self.softmax(scores * self.w)


@pytest.mark.parametrize(
    "scores, expected",
    [(torch.zeros(2, 3, 4, 7), 1.0), (1e4 * F.one_hot(torch.arange(4) % 7, 7).float().expand(2, 3, 4, 7), 0.0)],
    ids=["uniform", "one_hot"],
)
def test_known_cases(scores, expected):
    model = ScoredAttention()
    with attach(model, probes=["softmax_entropy"], strict=True) as session:
        model(scores).sum().backward()
        session.observe(0)
    df = session.records
    assert _get(df, "softmax", "entropy_mean") == pytest.approx(expected, abs=1e-6)
    assert _get(df, "softmax", "entropy_min") == pytest.approx(expected, abs=1e-6)
    for h in range(3):
        assert _get(df, f"softmax.head{h}", "entropy_mean") == pytest.approx(expected, abs=1e-6)


def test_softmax_matches_numpy_per_head():
    torch.manual_seed(0)
    model = ScoredAttention()
    scores = torch.randn(3, 4, 5, 9) * torch.tensor([0.1, 1.0, 3.0, 10.0]).view(1, 4, 1, 1)
    with attach(model, probes=["softmax_entropy"], strict=True) as session:
        p = model(scores)
        session.observe(0)
    h = _np_entropy(p.detach().numpy())  # (B, H, Q)
    df = session.records
    assert _get(df, "softmax", "entropy_mean") == pytest.approx(h.mean(), rel=1e-5)
    assert _get(df, "softmax", "entropy_min") == pytest.approx(h.min(), rel=1e-5)
    for head in range(4):
        assert _get(df, f"softmax.head{head}", "entropy_mean") == pytest.approx(h[:, head].mean(), rel=1e-5)
        assert _get(df, f"softmax.head{head}", "entropy_min") == pytest.approx(h[:, head].min(), rel=1e-5)


class Pool(nn.Module):
    """Attention pooling over tokens: softmax over dim 1 of (B, T)."""

    def __init__(self, d=6):
        super().__init__()
        self.score = nn.Linear(d, 1)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):  # (B, T, D) -> (B, D)
        w = self.softmax(self.score(x).squeeze(-1))
        return (w.unsqueeze(-1) * x).sum(1)


def test_pooling_softmax_and_schedule():
    torch.manual_seed(0)
    model = Pool()
    with attach(model, probes=["softmax_entropy"], every=2, strict=True) as session:
        probs = []
        for step in range(4):
            x = torch.randn(4, 11, 6)
            probs.append(model.softmax(model.score(x).squeeze(-1)).detach().numpy())
            model(x).sum().backward()
            session.observe(step)
    df = session.records
    assert sorted(df[(df.target == "softmax") & (df.metric == "entropy_mean")].step) == [0, 2]
    assert _get(df, "softmax", "entropy_mean", step=2) == pytest.approx(_np_entropy(probs[2]).mean(), rel=1e-5)


class SDPABlock(nn.Module):
    def __init__(self, d=16, heads=2):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.heads = heads

    def forward(self, x, mask=None, causal=False):
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                              is_causal=causal).transpose(1, 2).reshape(B, T, D)


def _np_attention(q, k, mask=None, causal=False):
    s = q.double().numpy() @ k.double().numpy().swapaxes(-1, -2) / math.sqrt(q.shape[-1])
    T, S = s.shape[-2:]
    if causal:
        s = np.where(np.tril(np.ones((T, S), dtype=bool)), s, -np.inf)
    if mask is not None:
        s = np.where(mask.numpy(), s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("variant", ["plain", "bool_mask", "causal"])
def test_sdpa_recomputed_matches_reference(variant):
    torch.manual_seed(0)
    model = nn.Sequential(SDPABlock())
    x = torch.randn(3, 7, 16)
    mask = torch.rand(3, 1, 7, 7) > 0.3
    mask[..., 0] = True  # every query may attend somewhere
    kwargs = {"mask": mask} if variant == "bool_mask" else {"causal": True} if variant == "causal" else {}
    original = F.scaled_dot_product_attention
    with attach(model, probes=["softmax_entropy"], strict=True) as session:
        model[0](x, **kwargs).sum().backward()  # a direct child called on its own opens the scope too
        session.observe(0)
    assert F.scaled_dot_product_attention is original  # nothing patched: a TorchFunctionMode sees the call
    assert not torch.overrides._get_current_function_mode_stack()
    q, k, _ = model[0].qkv(x).view(3, 7, 3, 2, 8).permute(2, 0, 3, 1, 4).detach()
    h = _np_entropy(_np_attention(q, k, kwargs.get("mask"), kwargs.get("causal", False)))
    df = session.records
    assert _get(df, "0", "entropy_mean") == pytest.approx(h.mean(), rel=1e-4)
    assert _get(df, "0", "entropy_min") == pytest.approx(h.min(), rel=1e-4, abs=1e-6)
    assert _get(df, "0.head1", "entropy_mean") == pytest.approx(h[:, 1].mean(), rel=1e-4)


def test_sdpa_only_on_expensive_steps():
    model = SDPABlock()
    with attach(model, probes=["softmax_entropy"], expensive_every=2, strict=True) as session:
        for step in range(3):
            model(torch.randn(2, 5, 16)).sum().backward()
            session.observe(step)
    df = session.records
    assert sorted(df[(df.target == "<root>") & (df.metric == "entropy_mean")].step) == [0, 2]


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_per_head_and_caller_output_unchanged(need_weights):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(12, 3, batch_first=True)
    x = torch.randn(2, 5, 12)
    _, ref_w = mha(x, x, x, need_weights=True, average_attn_weights=False)  # (B, H, L, S)
    h = _np_entropy(ref_w.detach().numpy())
    with attach(mha, probes=["softmax_entropy"], strict=True) as session:
        out, w = mha(x, x, x, None, need_weights)  # need_weights passed positionally
        session.observe(0)
    if need_weights:
        assert w.shape == (2, 5, 5)  # still head-averaged, as the caller asked
        torch.testing.assert_close(w, ref_w.mean(1))
    else:
        assert w is None
    df = session.records
    assert _get(df, "<root>", "entropy_mean") == pytest.approx(h.mean(), rel=1e-5)
    for head in range(3):
        assert _get(df, f"<root>.head{head}", "entropy_min") == pytest.approx(h[:, head].min(), rel=1e-5)


def test_contrastive_logits_rows_and_transpose():
    torch.manual_seed(0)
    logits = torch.randn(8, 8) * 3
    with attach(nn.Linear(1, 1), probes=["softmax_entropy"], strict=True) as session:
        session.observe(0, logits={"image_to_text": logits})
    df = session.records
    for target, z in (("logits.image_to_text", logits), ("logits.text_to_image", logits.T)):
        p = torch.softmax(z.double(), 1).numpy()
        assert _get(df, target, "entropy_mean") == pytest.approx(_np_entropy(p).mean(), rel=1e-5)
        assert _get(df, target, "positive_prob_mean") == pytest.approx(np.diag(p).mean(), rel=1e-5)
        assert _get(df, target, "top1_acc") == pytest.approx((p.argmax(1) == np.arange(8)).mean())
        # cross-entropy as given and at the best sharper rescaling, against a dense scan of the factor
        zd = z.double().numpy()

        def ce(a):
            return float(np.mean(np.log(np.exp(a * zd).sum(1)) - a * np.diag(zd)))

        assert _get(df, target, "cross_entropy") == pytest.approx(ce(1.0), rel=1e-5)
        factors = np.exp(np.linspace(0, np.log(64), 2001))
        dense = min(ce(a) for a in factors)
        got, factor = _get(df, target, "cross_entropy_best_scale"), _get(df, target, "best_scale_factor")
        assert got == pytest.approx(ce(factor), rel=1e-5)  # the value at the reported factor
        assert dense <= got + 1e-6 and got <= ce(1.0) + 1e-6
        # the sqrt(2) grid lands within one step of the true optimum of the convex curve
        assert got - dense < 0.1 * (ce(1.0) - dense) + 1e-3
    # a ranking that is right but soft (positives 1.0 above the rest): the best factor is well above 1
    soft = 0.2 * torch.randn(16, 16) + torch.eye(16)
    with attach(nn.Linear(1, 1), probes=["softmax_entropy"], strict=True) as session:
        session.observe(0, logits={"image_to_text": soft})
    assert _get(session.records, "logits.image_to_text", "best_scale_factor") >= 4.0
    assert (_get(session.records, "logits.image_to_text", "cross_entropy_best_scale")
            < 0.5 * _get(session.records, "logits.image_to_text", "cross_entropy"))
    # chance-level logits (all equal) sit at entropy 1
    with attach(nn.Linear(1, 1), probes=["softmax_entropy"]) as session:
        session.observe(0, logits={"image_to_text": torch.zeros(16, 16)})
    assert _get(session.records, "logits.image_to_text", "entropy_mean") == pytest.approx(1.0)


def test_huggingface_clip_eager_and_sdpa_agree():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    model = transformers.CLIPVisionModel(cfg)
    pixels = torch.randn(2, 3, 32, 32)
    got = {}
    for impl in ("eager", "sdpa"):
        model.set_attn_implementation(impl)
        with attach(model, probes=["softmax_entropy"], strict=True) as session:
            model(pixel_values=pixels).pooler_output.sum().backward()
            session.observe(0)
        df = session.records
        attn = sorted(t for t in set(df.target) if t.endswith("self_attn"))
        assert len(attn) == 2
        got[impl] = {t: _get(df, t, "entropy_mean") for t in attn}
    assert got["eager"].keys() == got["sdpa"].keys()
    for t in got["eager"]:
        assert got["sdpa"][t] == pytest.approx(got["eager"][t], rel=1e-5)


def test_best_scale_cross_entropy_batched_equals_one_factor_at_a_time(monkeypatch):
    """Every factor in one op (and both directions of the logits in one stack) gives the per-matrix,
    per-factor values: argmin, the best loss and the unscaled loss."""
    from probes import stats

    torch.manual_seed(0)
    z = torch.randn(2, 12, 12) * 0.3 + 2.0 * torch.eye(12)
    z[1, 3, 3] = float("nan")  # a non-finite row: that factor's loss is NaN, never the best
    ce, best, factor = stats.best_scale_cross_entropy(z)
    monkeypatch.setattr(stats, "BATCHED_SCALES_MAX", 0)
    for k in range(2):
        want = [(torch.logsumexp(a * z[k], 1) - a * z[k].diagonal()).mean() for a in stats.SCALE_FACTORS]
        c1, b1, f1 = stats.best_scale_cross_entropy(z[k])
        assert torch.equal(c1, ce[k]) or (c1.isnan() and ce[k].isnan())
        assert float(ce[k]) == pytest.approx(float(want[0]), rel=1e-6, nan_ok=True)
        assert float(b1) == pytest.approx(float(best[k]), rel=1e-6, nan_ok=True) and float(f1) == float(factor[k])


def test_logsumexp_floor_equals_torch_to_the_bit():
    """The shifted exponent floored at exp(-87) (no subnormal results on the CPU) gives torch.logsumexp's
    values bit for bit on sharp logits, and its NaN / +inf / all -inf rows."""
    from probes import stats

    torch.manual_seed(0)
    cos = torch.nn.functional.normalize(torch.randn(3, 16, 8), dim=-1)
    sharp = torch.tensor(stats.SCALE_FACTORS).reshape(-1, 1, 1, 1) * 100.0 * (cos @ cos.transpose(1, 2))
    assert (sharp - sharp.amax(-1, keepdim=True) < -87.0).any()  # the floor is reached
    assert torch.equal(stats._logsumexp(sharp), torch.logsumexp(sharp, -1))
    inf, nan = float("inf"), float("nan")
    odd = torch.tensor([[nan, 1.0, 2.0], [inf, 1.0, -inf], [-inf, -inf, -inf], [3.0, -inf, 0.5]])
    got, want = stats._logsumexp(odd), torch.logsumexp(odd, -1)
    assert got.isnan().tolist() == want.isnan().tolist()
    assert torch.equal(got[~got.isnan()], want[~want.isnan()])
