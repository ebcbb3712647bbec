"""Probe gradient_flow's outside writes: the weights at an observation against those the optimizer's step left,
by hand, for an EMA copied in, a hand-written decay, a clamp of one scalar and none."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from probes import attach


def _run(write, steps=6):
    """SGD on a small MLP; `write(model, step)` runs after each optimizer step. Returns the records and, per step,
    (‖θ_now − θ_after‖, ‖θ_after − θ_before‖, Σ(‖θ_after_i‖ − ‖θ_now_i‖), Σ‖write_i‖) computed by hand."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    model.scale = nn.Parameter(torch.tensor(2.0))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 6), torch.randn(16, 4)
    hand, after, upd = {}, None, math.nan
    with attach(model, opt, probes="cheap", strict=True) as session:
        for step in range(steps):
            now = [p.detach().clone() for p in model.parameters()]
            if after is not None:
                d = [a - n for a, n in zip(after, now)]
                hand[step] = (math.sqrt(sum(float((t * t).sum()) for t in d)), upd,
                              sum(float(a.norm() - n.norm()) for a, n in zip(after, now)),
                              sum(float(t.norm()) for t in d))
            opt.zero_grad()
            ((model(x) * model.scale - y) ** 2).mean().backward()
            session.observe(step, losses={"mse": ((model(x) - y) ** 2).mean()})
            opt.step()
            after = [p.detach().clone() for p in model.parameters()]
            upd = math.sqrt(sum(float(((a - n) ** 2).sum()) for a, n in zip(after, now)))
            with torch.no_grad():
                write(model, step)
    df = session.records
    return df, hand


def _model_rows(df, metric):
    rows = df[(df.probe == "gradient_flow.model") & (df.metric == metric)]
    return dict(zip(rows.step, rows.value))


def _ema(state={}):  # noqa: B006 - a fresh dict per test through the fixture below
    def write(model, step):
        avg = state.setdefault("avg", [p.detach().clone() for p in model.parameters()])
        for a, p in zip(avg, model.parameters()):
            a.mul_(0.9).add_(p, alpha=0.1)
        if step in (2, 4):  # "save a checkpoint": the average copied into the live weights, never restored
            for a, p in zip(avg, model.parameters()):
                p.copy_(a)
    return write


@pytest.mark.parametrize("kind", ["ema", "decay", "clamp", "none"])
def test_outside_writes_match_the_hand_computation(kind):
    write = {"ema": _ema({}), "decay": lambda m, s: [p.mul_(0.9) for p in m.parameters()],
             "clamp": lambda m, s: m.scale.clamp_(max=float(m.scale) - 1e-3), "none": lambda m, s: None}[kind]
    df, hand = _run(write)
    ratio, shrink = _model_rows(df, "outside_to_update"), _model_rows(df, "outside_shrink")
    assert sorted(ratio) == list(range(1, 6))  # from the first observation after a step, every step (all full)
    for step, (w, upd, dn, wsum) in hand.items():
        assert ratio[step] == pytest.approx(w / upd, rel=1e-4, abs=1e-7), step
        if w > 0:
            assert shrink[step] == pytest.approx(dn / wsum, rel=1e-3, abs=1e-6), step
    named = df[(df.probe == "gradient_flow") & (df.metric == "outside_to_param")]
    if kind == "ema":  # the copies after steps 2 and 4, observed at steps 3 and 5: longer than the step itself
        assert [s for s, v in ratio.items() if v > 1.0] == [3, 5] and all(ratio[s] == 0.0 for s in (1, 2, 4))
        assert shrink[3] < 0.9
    elif kind == "decay":  # only scaled down: the shrink share is 1 whichever tensors it touched
        assert all(v > 1.0 for v in ratio.values()) and all(v == pytest.approx(1.0, abs=1e-5) for v in shrink.values())
        assert len(set(named.target)) == 5  # every tensor written; MAX_OUTSIDE_NAMED of them named
    elif kind == "clamp":  # one scalar held at its bound: a fraction of the step
        assert 0.0 < max(ratio.values()) < 1.0 and set(named.target) == {"scale"}
    else:
        assert set(ratio.values()) == {0.0} and named.empty


def test_a_second_optimizer_step_before_the_observation_voids_the_reading():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    with attach(model, opt, probes="cheap", strict=True) as session:
        for step in range(4):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            if step % 2 == 0:  # observed every other step only: the step in between is not an outside write
                session.observe(step, losses={"l": model(x).pow(2).mean()})
            opt.step()
    assert _model_rows(session.records, "outside_to_update") == {}


def test_non_finite_norms_give_nan_readings_without_warnings_or_errors(recwarn):
    """Norms that are inf on both sides of the write (inf - inf) or of opposite signs across tensors (a sum of +inf
    and -inf, which math.fsum refuses) read as NaN."""
    from probes.gradients import GradientFlow

    class Buffer:
        rows: list = []

        def extend_columns(self, step, probe, cols):
            self.rows.append(cols)

    class Session:
        buffer = Buffer()

    probe = GradientFlow()
    probe.names, probe.params, probe._order = ["a", "b"], [None, None], np.array([0, 1])
    probe._fused, probe._sample_scale = [[0, 1]], np.ones(2)
    inf = math.inf
    # update norms, then the group's (3, 2) table of sums of squares: write, after the step, now
    probe._outside_rows(Session(), 3, [1.0, 1.0, inf, 1.0, inf, 1.0, inf, inf])
    probe._outside_rows(Session(), 4, [1.0, 1.0, 1.0, 1.0, inf, 4.0, 1.0, inf])
    model = [c for c in Session.buffer.rows]
    assert len(model) == 2 and all(math.isnan(v) for v in (model[0].values[2], model[1].values[2]))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_large_tensors_are_read_on_a_sample_whose_norms_scale_to_the_whole():
    """A 256 x 128 weight (32768 elements, 32x OUTSIDE_SAMPLE) decayed by hand after each step: the reading, taken on
    every 32nd element, matches the whole tensor's within a few percent, and the decay still reads as a pure shrink."""
    from probes.gradients import OUTSIDE_SAMPLE

    torch.manual_seed(0)
    model = nn.Linear(128, 256)
    assert model.weight.numel() == 32 * OUTSIDE_SAMPLE
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(16, 128)
    want = {}
    with attach(model, opt, probes="cheap", strict=True) as session:
        for step in range(4):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            session.observe(step, losses={"l": model(x).pow(2).mean()})
            before = [p.detach().clone() for p in model.parameters()]
            opt.step()
            update = math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(model.parameters(), before)))
            write = 0.01 * float(model.weight.detach().norm())  # what the decay below takes away
            want[step + 1] = write / update
            with torch.no_grad():
                model.weight.mul_(0.99)
    ratio, shrink = _model_rows(session.records, "outside_to_update"), _model_rows(session.records, "outside_shrink")
    assert sorted(ratio) == [1, 2, 3]
    for step in (1, 2, 3):
        assert ratio[step] == pytest.approx(want[step], rel=0.05)
        assert shrink[step] == pytest.approx(1.0, abs=1e-3)  # float32 sums of squares


def test_the_per_tensor_sums_are_the_same_where_segment_reduce_is_missing(monkeypatch):
    """A device without `segment_reduce` (the fallback sums each tensor's stretch): the same readings."""
    write = {"decay": lambda m, s: [p.mul_(0.9) for p in m.parameters()]}["decay"]
    df, _ = _run(write)
    want = _model_rows(df, "outside_to_update")

    def missing(*args, **kwargs):
        raise NotImplementedError("segment_reduce")
    monkeypatch.setattr(torch, "segment_reduce", missing)
    df, _ = _run(write)
    got = _model_rows(df, "outside_to_update")
    assert sorted(got) == sorted(want) and all(got[s] == pytest.approx(want[s], rel=1e-6) for s in want)


@pytest.mark.parametrize("grad_scale", [1.0, 0.0])
def test_update_turn_matches_the_hand_computation_and_reads_zero_for_a_decay(grad_scale):
    """update_turn_to_param: the update less its projection on each tensor, √Σ‖Δ⊥‖² / ‖θ_before‖. A step that is only
    weight decay (the loss times 0: SGD's coupled decay alone) rescales every tensor and reads ~0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)
    x, y = torch.randn(16, 6), torch.randn(16, 4)
    hand = {}
    with attach(model, opt, probes="cheap", strict=True) as session:
        for step in range(5):
            before = [p.detach().clone() for p in model.parameters()]
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            (loss * grad_scale).backward()
            session.observe(step, losses={"mse": loss})
            opt.step()
            perp2, upd2, radial2 = 0.0, 0.0, 0.0
            for b, p in zip(before, model.parameters()):
                d, t = (b - p.detach()).double().reshape(-1), p.detach().double().reshape(-1)
                perp2 += float(d @ d - (d @ t) ** 2 / (t @ t))
                upd2 += float(d @ d)
                radial2 += float((d @ t) ** 2 / (t @ t)) if t.numel() > 1 else 0.0
            norm = math.sqrt(sum(float((b.double() ** 2).sum()) for b in before))
            hand[step] = (math.sqrt(max(perp2, 0.0)) / norm, math.sqrt(upd2) / norm, math.sqrt(radial2) / norm)
    turn, update = _model_rows(session.records, "update_turn_to_param"), _model_rows(session.records, "update_to_param")
    rescale = _model_rows(session.records, "update_rescale_to_param")
    assert sorted(turn) == list(range(5))
    for step, (t, u, r) in hand.items():
        assert update[step] == pytest.approx(u, rel=1e-4) and rescale[step] == pytest.approx(r, rel=1e-3, abs=1e-9)
        if grad_scale:
            assert turn[step] == pytest.approx(t, rel=1e-3) and turn[step] > 0.3 * update[step]
        else:  # decay alone: the step moves the weights by lr x wd (x the momentum's sum) and turns them by nothing
            # but float32's rounding of θ_before − θ_after (~1e-7 of θ, against a step of 2.5e-4 of it)
            assert update[step] > 1e-4 and turn[step] < 1e-3 * update[step]
