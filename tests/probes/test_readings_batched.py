"""The collapse, softmax-entropy and latent probes compute their every-step readings for `BATCH_STEPS` steps at
once on the steps' own stacked tensors: every reading equals its one-step computation and carries its own step,
and held steps reach the records when they are read (`records`) and at `close`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probes import attach, stats
from probes.collapse import Collapse
from probes.contrastive import BATCH_STEPS
from probes.entropy import SoftmaxEntropy, _logits_stats


def _by_step(df, probe: str) -> dict[int, dict[tuple[str, str], float]]:
    out: dict[int, dict[tuple[str, str], float]] = {}
    sub = df[df["probe"] == probe]
    for step, t, m, v in zip(sub["step"], sub["target"], sub["metric"], sub["value"]):
        row = out.setdefault(int(step), {})
        assert (t, m) not in row, (step, t, m)  # each reading once per step
        row[(t, m)] = v
    return out


def _close(got: float, want: float, rel: float = 1e-6, abs_: float = 1e-7) -> bool:
    return (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=rel, abs=abs_)


def _embedding_steps() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    steps = []
    for i in range(21):
        rows = 12 if i in (9, 10) else 16  # a smaller batch in the middle: a new stack
        a = torch.randn(rows, 32, generator=g)
        b = a + 0.5 * torch.randn(rows, 32, generator=g)
        if i % 3 == 0:  # rows at unit norm (the usual CLIP embeddings)
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        if i == 4:
            a[3, 5] = float("nan")  # a non-finite row: masked, counted
        if i == 6:
            b[2] = float("inf")
        steps.append((a, b))
    return steps


def _collapse_plain(a: torch.Tensor, b: torch.Tensor) -> dict[tuple[str, str], float]:
    """The collapse readings of one step, each from its one-tensor definition."""
    out = {}
    for name, x in (("image", a), ("text", b)):
        for metric, v in stats.collapse_metrics(x, expensive=False).items():
            out[(name, metric)] = float(v)
        out[(name, "column_norm_dev")] = float((torch.linalg.vector_norm(x, dim=0) - 1.0).abs().max())
    out[("image~text", "alignment")] = float(stats.alignment(a, b))
    out[("image~text", "negative_cosine")] = float(stats.negative_cosine(a, b))
    return out


def test_collapse_batched_readings_equal_each_steps_own():
    steps = _embedding_steps()
    expensive = 14
    with attach(nn.Linear(2, 2), None, probes=[Collapse()], strict=True, expensive_every=expensive) as s:
        for i, (a, b) in enumerate(steps, start=1):
            s.observe(i, embeddings={"image": a, "text": b})
    got = _by_step(s.records, "collapse")
    assert sorted(got) == list(range(1, len(steps) + 1))
    for i, (a, b) in enumerate(steps, start=1):
        want = _collapse_plain(a, b)
        if i == expensive:  # computed at once, with the spectrum
            assert ("image", "effective_rank") in got[i] and set(want) <= set(got[i])
        else:
            assert set(got[i]) == set(want), i
        for key, value in want.items():
            # cosine_mean, negative_cosine and column_norm_dev sit near 0 by cancellation (a sum of rows against their
            # number, a norm against 1): a reduction in another order would show here first
            assert _close(got[i][key], value, abs_=1e-9), (i, key, got[i][key], value)


def test_collapse_holds_steps_until_read_or_closed():
    steps = [(a, b) for a, b in _embedding_steps() if len(a) == 16][:BATCH_STEPS + 3]  # one shape: one stack
    with attach(nn.Linear(2, 2), None, probes=[Collapse()], strict=True, expensive_every=10 ** 6) as s:
        for i, (a, b) in enumerate(steps[:3], start=1):
            s.observe(i, embeddings={"image": a, "text": b})
        held = s.buffer.frame()
        assert (held["probe"] == "collapse").sum() == 0  # held, not yet computed
        assert set(s.records.query("probe == 'collapse'")["step"]) == {1, 2, 3}  # reading the records computes them
        for i, (a, b) in enumerate(steps[3:], start=4):
            s.observe(i, embeddings={"image": a, "text": b})
        before_close = set(s.buffer.frame().query("probe == 'collapse'")["step"])
        assert before_close == set(range(1, 3 + BATCH_STEPS + 1))  # a full stack is computed when it fills
    after = s.buffer.frame()
    assert set(after.query("probe == 'collapse'")["step"]) == set(range(1, len(steps) + 1))  # close computed the rest


def _logit_steps() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    steps = [3 * torch.randn(16, 16, generator=g) for _ in range(19)]
    steps[5] = torch.randn(12, 12, generator=g)  # another size: a new stack
    steps[6][2, 3] = float("nan")  # a non-finite row
    steps[7] = torch.randn(16, 20, generator=g)  # not square: no diagonal readings, two shapes
    return steps


def test_entropy_batched_readings_equal_each_steps_own():
    steps = _logit_steps()
    with attach(nn.Linear(2, 2), None, probes=[SoftmaxEntropy()], strict=True, expensive_every=10 ** 6) as s:
        for i, z in enumerate(steps, start=1):
            s.observe(i, logits={"image_to_text": z})
            if i == 3:
                assert set(s.records.query("probe == 'softmax_entropy'")["step"]) == {1, 2, 3}
    got = _by_step(s.records, "softmax_entropy")
    for i, z in enumerate(steps, start=1):
        want = {}
        for target, x in (("logits.image_to_text", z), ("logits.text_to_image", z.T)):
            for metric, v in _logits_stats(x.unsqueeze(0)).items():
                want[(target, metric)] = float(v[0])
        assert set(got[i]) == set(want), i
        for key, value in want.items():
            assert _close(got[i][key], value), (i, key, got[i][key], value)


class _Latents(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.latents = nn.Parameter(0.02 * torch.randn(6, 16))
        self.query_tokens = nn.Parameter(torch.randn(1, 4, 8))  # (1, L, D): rows over the last axis
        self.out = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.latents).sum() * x + self.query_tokens.pow(2).sum()


def _latent_run(expensive_every: int, read_at: int | None = None) -> tuple[dict, list[dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    model = _Latents()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    values = []
    with attach(model, opt, probes=["latent_stats"], strict=True, expensive_every=expensive_every) as s:
        for step in range(19):
            loss = model(torch.tensor(1.0))
            opt.zero_grad()
            loss.backward()
            values.append({n: p.detach().clone() for n, p in model.named_parameters()})
            s.observe(step, losses={"total": loss})
            opt.step()  # the held steps keep their own values, not the parameter's later ones
            if step == read_at:
                assert set(s.records.query("probe == 'latent_stats'")["step"]) == set(range(step + 1))
    return _by_step(s.records, "latent_stats"), values


def test_latent_batched_readings_equal_each_steps_own():
    got, values = _latent_run(expensive_every=10 ** 6, read_at=4)
    plain, _ = _latent_run(expensive_every=1)  # every step computed at once (with the expensive extras)
    init = {n: v for n, v in values[0].items()}
    assert sorted(got) == list(range(19))
    for step, row in got.items():
        extras = () if step == 0 else ("cosine_mean", "identical_rows")  # step 0: expensive in both runs
        assert set(row) == {k for k in plain[step] if k[1] not in extras}, step
        for key, value in row.items():
            assert _close(value, plain[step][key]), (step, key)
        x = values[step]["latents"]  # and against the definitions, on the step's own value
        assert row[("latents", "drift")] == pytest.approx(float((x - init["latents"]).norm() / init["latents"].norm()),
                                                          rel=1e-6, abs=1e-9)
        assert row[("latents", "norm_max")] == pytest.approx(float(x.norm(dim=1).max()), rel=1e-6)
    assert got[0][("latents", "drift")] == 0.0 and got[18][("latents", "drift")] > 0


def test_later_steps_stamps_each_row_with_its_step():
    from probes._records import RecordBuffer

    buf = RecordBuffer()
    buf.later_steps([3, 4, 7], "p", torch.arange(6.0).reshape(3, 2), ["a", "b"], ["m", "n"])
    df = buf.frame()
    assert list(zip(df["step"], df["target"], df["metric"], df["value"])) == [
        (3, "a", "m", 0.0), (3, "b", "n", 1.0), (4, "a", "m", 2.0), (4, "b", "n", 3.0), (7, "a", "m", 4.0),
        (7, "b", "n", 5.0)]
