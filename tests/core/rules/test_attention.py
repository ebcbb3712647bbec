"""Attention and latent rules (`diagnose.core.rules.attention`): attention entropy, latents (symmetric,
not moving, scale normalised away), a softmax over the batch axis."""

from __future__ import annotations

from diagnose.core import rules as R

from .harness import BAR, LATENT, LN_B, B, N, ctx, frame, ids, latents, loss, one, rec, tail


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


UNIFORM = rec("softmax_entropy", "vision.pool", "entropy_mean", [0.995] * N)  # uniform from init to the end


def test_uniform_attention_fires_in_a_run_that_is_not_learning():
    stuck = loss("loss_clip", [LN_B * 1.001] * N)  # at ln(B), not falling
    f = one(R.attention_entropy(frame(UNIFORM, stuck), ctx()), "attention_uniform")
    assert f.target == "vision.pool" and f.evidence["modules"]["vision.pool"]["end"] == 0.995


def test_uniform_attention_is_quiet_in_a_run_that_learned_or_is_still_learning():
    """A pooling that averages (alike tokens, few tokens) while the run learns is not why anything fails."""
    learned = loss("loss_clip", [LN_B * (1 - 0.9 * i / (N - 1)) for i in range(N)])  # ends at 0.1 ln B
    assert learned[learned["metric"] == "value"]["value"].iloc[-1] < BAR
    assert R.attention_entropy(frame(UNIFORM, learned), ctx()) == []
    falling = loss("loss_clip", [LN_B * (1 - 0.3 * i / (N - 1)) for i in range(N)])  # 0.7 ln B and still falling
    assert falling[falling["metric"] == "value"]["value"].iloc[-1] > BAR
    assert R.attention_entropy(frame(UNIFORM, falling), ctx()) == []
    # a collapsed softmax is reported whatever the loss did
    collapsed = rec("softmax_entropy", "vision.pool", "entropy_mean", tail(0.9, 0.01))
    assert ids(R.attention_entropy(frame(collapsed, learned), ctx())) == ["attention_entropy_collapse"]


def test_a_healthy_two_tower_watched_run_has_no_uniform_attention_and_no_root_never_called():
    """Two towers driven through `encode_image`/`encode_text` (the root's forward never runs; its logit scale
    is read directly), an attention pooling over 8 tokens that all carry the pair's content plus noise, so
    averaging them is what the loss asks for: the softmax stays uniform (H/ln K > 0.98) while the run learns."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import diagnose

    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.score = nn.Linear(32, 1)

        def forward(self, h):
            return (self.score(h).squeeze(-1).softmax(-1).unsqueeze(-1) * h).sum(1)

    class Towers(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.pool, self.out = nn.Linear(16, 32), Pool(), nn.Linear(32, 16)
            self.txt = nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 16))
            self.logit_scale = nn.Parameter(torch.tensor(2.659))

        def encode_image(self, x):
            return F.normalize(self.out(self.pool(self.proj(x))), dim=-1)

        def encode_text(self, t):
            return F.normalize(self.txt(t), dim=-1)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        z = torch.randn(512, 6, generator=g)
        x = (z @ torch.randn(6, 16, generator=g)).unsqueeze(1) + 0.5 * torch.randn(512, 8, 16, generator=g)
        t = z @ torch.randn(6, 12, generator=g)
        model, batch = Towers(), 32
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        with diagnose.watch(model, opt, out=None, alarm="off", budget=None) as w:
            for step in range(60):
                idx = torch.randint(0, len(x), (batch,))
                img, txt = model.encode_image(x[idx]), model.encode_text(t[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                labels = torch.arange(batch)
                loss_ = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
                opt.zero_grad()
                loss_.backward()
                w.observe(step, losses={"clip": loss_}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=batch)
                opt.step()
    finally:
        torch.set_num_threads(threads)
    summary = w.result().to_dict()
    assert summary["runs"][0]["verdict"]["learned"], summary["runs"][0]["verdict"]
    r = w.records
    pool = r[(r["target"] == "pool") & (r["metric"] == "entropy_mean")]["value"]
    assert len(pool) >= 3 and pool.tail(3).min() > R.UNIFORM_ENTROPY  # the softmax is uniform, as it should be
    assert "attention_uniform" not in {f["id"] for f in summary["findings"]}
    assert "<root>" not in w.coverage()["modules_never_called"]


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


# --- samples mixed across the batch (probes.batch_mixing: each half of the batch recomputed alone) ----------------
def mixed(target: str, values, low: float = 0.0):
    steps = dict(zip((1, 3, 11), values))
    return frame(rec("batch_mixing", target, "mixed_rel", steps), rec("batch_mixing", target, "low_precision",
                                                                      {s: low for s in steps}))


def test_samples_mixed_names_the_deepest_module_and_is_an_error_on_two_readings():
    df = frame(mixed("<root>", [0.3, 0.3]), mixed("pool", [0.4, 0.5]), mixed("pool.attn", [0.6, 0.5]),
               mixed("text", [0.0, 0.0]))
    f = one(R.samples_mixed(df, ctx()), "samples_mixed")
    assert f.severity == "error" and f.target == "pool.attn"
    assert f.evidence["readings"] == 2 and f.evidence["steps"] == [1, 3]
    assert f.evidence["mixed_rel_median"] == 0.55 and f.evidence["modules_mixing"] == ["pool.attn"]


def test_samples_mixed_one_reading_is_a_warning():
    assert one(R.samples_mixed(mixed("pool", [0.4]), ctx()), "samples_mixed").severity == "warning"


def test_samples_mixed_quiet_on_rounding_and_on_a_reading_that_does_not_hold():
    assert R.samples_mixed(mixed("pool", [2e-7, 9e-4]), ctx()) == []  # float32 recomputation on half a batch
    assert R.samples_mixed(mixed("pool", [0.3, 1e-7]), ctx()) == []  # not on every reading: not the code's layout
    # float16 / bfloat16 outputs: rounding alone reaches 1e-2
    assert R.samples_mixed(mixed("pool", [0.02, 0.03], low=1.0), ctx()) == []
    assert one(R.samples_mixed(mixed("pool", [0.2, 0.3], low=1.0), ctx()), "samples_mixed").severity == "error"


def test_samples_reordered_when_every_recomputed_row_is_one_of_the_batch():
    df = frame(mixed("text", [0.9, 1.1]), rec("batch_mixing", "text", "reordered_rel", {1: 1e-8, 3: 0.0}))
    f = one(R.samples_mixed(df, ctx()), "samples_reordered")
    assert f.severity == "error" and f.target == "text"
    assert [c["cause"] for c in R.rank_root_causes([f.to_dict()], {"learned": False})][:1] == ["misaligned_pairs"]
    # values moved too: mixing, not reordering
    df = frame(mixed("text", [0.9, 1.1]), rec("batch_mixing", "text", "reordered_rel", {1: 0.5, 3: 0.4}))
    assert R.samples_mixed(df, ctx())[0].id == "samples_mixed"
