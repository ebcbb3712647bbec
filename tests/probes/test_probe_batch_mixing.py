"""probes.batch_mixing: each half of the batch recomputed alone, in eval mode, on the step's own inputs."""

from __future__ import annotations

import torch
from torch import nn

from probes import attach
from probes.batch_mixing import mixing

B, T, D = 8, 5, 12


class Pooler(nn.Module):
    """Latent attention pooling over (B, T, D) tokens, with a dropout and a batch norm that must not count."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(T, D))  # as many latents as tokens: no shape error
        self.attn = nn.MultiheadAttention(D, 2, batch_first=batch_first, dropout=0.5)
        self.norm = nn.BatchNorm1d(D)

    def forward(self, tokens):
        q = self.latents.unsqueeze(0).expand(len(tokens), -1, -1)
        return self.norm(self.attn(q, tokens, tokens)[0].mean(1))


class Model(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        self.pool = Pooler(batch_first)
        self.proj = nn.Linear(D, D)

    def forward(self, tokens):
        return nn.functional.normalize(self.proj(self.pool(tokens)), dim=-1)


def run(batch_first: bool, steps: int = 4):
    model = Model(batch_first)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with attach(model, optimizer=opt, probes=["batch_mixing"]) as session:
        for step in range(steps):
            x = torch.randn(B, T, D)
            emb = model(x)
            loss = emb.var(0).sum()
            opt.zero_grad()
            loss.backward()
            session.observe(step, embeddings={"image": emb}, batch_size=B)
            opt.step()
    return session


def test_attention_over_the_batch_axis_is_measured_where_it_happens():
    session = run(batch_first=False)
    df = session.records
    rel = df[(df.probe == "batch_mixing") & (df.metric == "mixed_rel")].pivot_table(index="target", columns="step",
                                                                                  values="value")
    assert list(rel.columns) == [1, 3]  # the forwards after observations 0 and 2
    assert (rel.loc["pool.attn"] > 0.05).all()  # (B, T, D) read as (L=B, N=T, D): attention over the batch
    assert (rel.loc["proj"] < 1e-5).all() and (rel.loc["pool.norm"] < 1e-5).all()  # batch norm: running stats
    assert (rel.loc["pool"] > 0.05).all() and set(rel.index) == {"<root>", "pool", "proj", "pool.attn", "pool.norm"}
    assert session.coverage()["batch_mixing_tests"] == 10


def test_batch_first_attention_is_clean_and_the_descent_stops_below_the_root_children():
    session = run(batch_first=True)
    df = session.records
    rel = df[(df.probe == "batch_mixing") & (df.metric == "mixed_rel")]
    assert set(rel.target) == {"<root>", "pool", "proj", "pool.attn"}  # attention modules are always tested
    assert (rel.value < 1e-5).all()


def test_the_test_leaves_rng_modes_and_buffers_as_it_found_them():
    model = Model(batch_first=False).train()
    model.pool.norm.eval()  # a mixed state, restored module by module
    x = torch.randn(B, T, D)
    running = model.pool.norm.running_mean.clone()
    state = torch.random.get_rng_state()
    rel, moved, low = mixing(model.pool, (x,), {}, B)
    assert rel > 0.05 and moved > 0.05 and not low  # values mixed, not rows moved
    assert torch.equal(torch.random.get_rng_state(), state)
    assert model.training and model.pool.attn.training and not model.pool.norm.training
    assert torch.equal(model.pool.norm.running_mean, running)


def test_untestable_calls_are_passed_over():
    lin = nn.Linear(D, D)
    assert mixing(lin, (torch.randn(B, B),), {}, B) is None  # two axes of the batch's size: which one?
    assert mixing(lin, (torch.randn(3, D),), {}, B) is None  # no axis of the batch's size
    assert mixing(lin, (torch.randn(2, D),), {}, 2) is None  # too small to halve


class SortedTower(nn.Module):
    """Sorts the batch by a per-sample key (as for packing by length) and never undoes it."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(D, D)

    def forward(self, x):
        order = x[:, 0].argsort(descending=True)
        return self.proj(x[order])


def test_rows_returned_in_a_batch_dependent_order_are_told_from_values_mixed():
    torch.manual_seed(0)
    rel, moved, low = mixing(SortedTower(), (torch.randn(B, D),), {}, B)
    assert rel > 0.1 and moved < 1e-6 and not low  # each row is a sample's own, elsewhere


class HiddenViewed(nn.Module):
    """A bidirectional GRU's final state (2, B, H) flattened with .view(B, 2H): row r is built from two other
    samples' states (Sentence-VAE's encoder), each row of which the whole batch also has, but paired differently."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(D, 4, batch_first=True, bidirectional=True)

    def forward(self, x):
        _, h = self.gru(x)
        return h.view(x.shape[0], -1)


def test_rows_built_from_several_samples_are_mixed_not_reordered():
    torch.manual_seed(0)
    rel, moved, _ = mixing(HiddenViewed(), (torch.randn(B, 5, D),), {}, B)
    # each half's rows happen to be rows of the whole batch's outputs; the batch shuffled pairs other samples
    assert rel > 0.1 and moved > 0.1


class QueriesViewed(nn.Module):
    """K queries attend per sample (sequence-first, correctly), the (K, B, D) output then read as (B, K, D) with .view
    and mean-pooled (OpenPSG's DETR line): row r is the mean of one query over a block of neighbouring samples. Each
    half's rows and the reversed batch's rows are rows of the whole batch's outputs (reversal maps blocks onto
    themselves); a shuffled batch builds blocks the whole batch never had."""

    def __init__(self, k: int = 4):
        super().__init__()
        self.query = nn.Parameter(torch.randn(k, 1, D))
        self.attn = nn.MultiheadAttention(D, 2)

    def forward(self, x):
        out, _ = self.attn(self.query.expand(-1, x.shape[0], -1), x.transpose(0, 1), x.transpose(0, 1))
        return out.view(x.shape[0], -1, D).mean(1)


def test_rows_viewed_from_blocks_of_neighbouring_samples_are_mixed_not_reordered():
    torch.manual_seed(0)
    model, x = QueriesViewed().eval(), torch.randn(B, 5, D)
    with torch.no_grad():
        full, flipped = model(x), model(x.flip(0))
    near = torch.cdist(flipped, full).min(dim=1).values  # what a reversed batch could not tell
    assert float(near.max()) < 1e-5
    rel, moved, _ = mixing(model, (x,), {}, B)
    assert rel > 0.1 and moved > 0.1


def test_the_recomputation_runs_no_forward_hook_and_puts_them_back():
    model = Model(batch_first=False)
    calls = []
    model.proj.register_forward_hook(lambda m, a, o: calls.append(1))
    model.pool.register_forward_pre_hook(lambda m, a: calls.append(2))
    rel, _, _ = mixing(model, (torch.randn(B, T, D),), {}, B)
    assert rel >= 0 and calls == []
    model(torch.randn(B, T, D))
    assert sorted(calls) == [1, 2]


def test_the_feature_axis_does_not_hide_the_batch_axis_when_the_width_equals_the_batch():
    from probes.batch_mixing import _batch_axis

    assert _batch_axis(torch.zeros(B, T, B), B) == 0  # (batch, tokens, width = batch)
    assert _batch_axis(torch.zeros(T, B, B), B) == 1  # sequence first
    assert _batch_axis(torch.zeros(B, B, B), B) == -1  # still ambiguous
    assert _batch_axis(torch.zeros(T, B), B) == 1 and _batch_axis(torch.zeros(T, T), B) is None


def test_a_cls_encoder_over_the_batch_axis_is_found_when_its_width_equals_the_batch():
    """A [CLS] token prepended to (B, T, D) tokens fed to a sequence-first encoder layer with d_model = B: the CLS
    query attends only to the batch's identical CLS copies (its output does not change with the batch, so the
    root reads clean); the layer's attention mixes the samples' tokens."""
    torch.manual_seed(0)

    class Bridge(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls = nn.Parameter(torch.randn(1, 1, B))
            self.layer = nn.TransformerEncoderLayer(d_model=B, nhead=2, dim_feedforward=16, dropout=0.0)

        def forward(self, tokens):
            x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
            return nn.functional.normalize(self.layer(x)[:, 0], dim=-1)

    model = Bridge()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with attach(model, optimizer=opt, probes=["batch_mixing"]) as session:
        for step in range(2):
            emb = model(torch.randn(B, T, B))
            loss = emb.var(0).sum()
            opt.zero_grad()
            loss.backward()
            session.observe(step, embeddings={"image": emb}, batch_size=B)
            opt.step()
    df = session.records
    rel = df[(df.probe == "batch_mixing") & (df.metric == "mixed_rel")].groupby("target").value.max()
    assert rel["layer.self_attn"] > 0.05


class Packed(nn.Module):
    """Samples of their own length given as a list and packed into one sequence inside: a mean over the packed
    sequence (every sample's output is the batch's) or per sample (each its own)."""

    def __init__(self, per_sample: bool):
        super().__init__()
        self.per_sample = per_sample
        self.proj = nn.Linear(D, D)

    def forward(self, token_list, texts):
        packed = self.proj(torch.cat(token_list))
        if self.per_sample:
            pooled = torch.stack([p.mean(0) for p in packed.split([len(t) for t in token_list])])
        else:
            pooled = packed.mean(0).expand(len(token_list), -1)
        return pooled, texts * 2


def test_a_batch_given_as_a_list_of_samples_of_their_own_size_is_cut_as_a_list():
    g = torch.Generator().manual_seed(0)
    token_list = [torch.randn(3 + i % 4, D, generator=g) for i in range(B)]
    texts = torch.randn(B, 6, generator=g)
    mixed = mixing(Packed(per_sample=False), (token_list, texts), {}, B)
    clean = mixing(Packed(per_sample=True), (token_list, texts), {}, B)
    assert mixed is not None and mixed[0] > 0.01  # every sample's output is the whole batch's mean
    assert clean is not None and clean[0] < 1e-5
    # near misses: a list of batched tensors (each with the batch axis) is not a batch of samples; nor a list of
    # another length; the positional arguments themselves are never read as one
    from probes.batch_mixing import _per_sample

    assert not _per_sample([torch.randn(B, D) for _ in range(B)], B)
    assert not _per_sample(token_list[:-1], B)
    assert mixing(Packed(per_sample=False), tuple(token_list), {}, B) is None
