"""Gradient flow probe against autograd and a hand-computed optimizer step."""

import math

import pytest
import torch
from torch import nn

from probes import attach
from probes.gradients import layer_of


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        return self.norm(torch.relu(self.fc(x)))


class Toy(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.embed = nn.Linear(4, d)
        self.layers = nn.ModuleList([Block(d) for _ in range(2)])
        self.head = nn.Linear(d, 1)
        self.unused = nn.Linear(d, d)  # trainable, never called: grad stays None
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x).squeeze(-1) * self.scale


def _values(df, probe, step=0):
    sub = df[(df.probe == probe) & (df.step == step)]
    return {(t, m): v for t, m, v in zip(sub.target, sub.metric, sub.value)}


def _run(optimizer_in_attach=True, call_after_step=False, lr=0.1, steps=1):
    torch.manual_seed(0)
    model = Toy()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x, y = torch.randn(16, 4), torch.randn(16)
    snaps = []
    with attach(model, optimizer=opt if optimizer_in_attach else None, probes="cheap", strict=True) as session:
        for step in range(steps):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            session.observe(step, losses={"total": loss})
            opt.step()
            after = {n: p.detach().clone() for n, p in model.named_parameters()}
            snaps.append((grads, before, after))
            if call_after_step:
                session.after_step(step)
    return session, model, snaps


def test_per_parameter_metrics_match_autograd():
    session, model, snaps = _run()
    grads, before, _ = snaps[0]
    got = _values(session.records, "gradient_flow")
    for name, p in model.named_parameters():
        if name.startswith("unused"):
            assert got[(name, "grad_is_none")] == 1.0
            assert (name, "grad_norm") not in got
            continue
        g, w = grads[name], before[name]
        assert got[(name, "grad_norm")] == pytest.approx(g.norm().item(), rel=1e-5)
        assert got[(name, "param_norm")] == pytest.approx(w.norm().item(), rel=1e-5)
        assert got[(name, "grad_to_param")] == pytest.approx((g.norm() / w.norm()).item(), rel=1e-5)
        assert got[(name, "zero_grad_frac")] == pytest.approx((g == 0).float().mean().item(), abs=1e-7)
        assert got[(name, "nonfinite_grad")] == 0.0
    # a ReLU feeding fc of layer 1 leaves exactly-zero gradient rows somewhere in the net
    assert any(v > 0 for (t, m), v in got.items() if m == "zero_grad_frac")


@pytest.mark.parametrize(
    "optimizer_in_attach, call_after_step",
    [(True, False), (False, True), (False, False)],
    ids=["optimizer_hook", "after_step", "neither (measured at next observe / exit)"],
)
def test_update_to_param_equals_hand_computation(optimizer_in_attach, call_after_step):
    session, model, snaps = _run(optimizer_in_attach, call_after_step, steps=2)
    for step, (_, before, after) in enumerate(snaps):
        got = _values(session.records, "gradient_flow", step)
        for name in before:
            want = ((after[name] - before[name]).norm() / before[name].norm()).item()
            assert got[(name, "update_to_param")] == pytest.approx(want, rel=1e-5, abs=1e-9), (step, name)
        # per-layer aggregate: norm of the concatenated update over the concatenated parameters
        idx = [n for n in before if n.startswith("layers.1.")]
        d = math.sqrt(sum((after[n] - before[n]).norm().item() ** 2 for n in idx))
        w = math.sqrt(sum(before[n].norm().item() ** 2 for n in idx))
        layer = _values(session.records, "gradient_flow.layer", step)
        assert layer[("layers.1", "update_to_param")] == pytest.approx(d / w, rel=1e-5)


def test_module_layer_and_model_aggregates():
    session, model, snaps = _run()
    grads, before, _ = snaps[0]
    mod = _values(session.records, "gradient_flow.module")
    layer = _values(session.records, "gradient_flow.layer")
    total = _values(session.records, "gradient_flow.model")
    fc = ["layers.0.fc.weight", "layers.0.fc.bias"]
    assert mod[("layers.0.fc", "grad_norm")] == pytest.approx(math.sqrt(sum(grads[n].norm() ** 2 for n in fc)),
                                                              rel=1e-5)
    block = [n for n in grads if n.startswith("layers.0.")]
    assert layer[("layers.0", "grad_norm")] == pytest.approx(math.sqrt(sum(grads[n].norm() ** 2 for n in block)),
                                                             rel=1e-5)
    assert mod[("<root>", "param_norm")] == pytest.approx(2.0)  # `scale`
    assert mod[("unused", "grad_is_none")] == 1.0
    assert total[("model", "grad_is_none_frac")] == pytest.approx(2 / len(before))
    all_g = math.sqrt(sum(g.norm() ** 2 for g in grads.values()))
    assert total[("model", "grad_norm")] == pytest.approx(all_g, rel=1e-5)


def test_layer_grouping_names():
    prefixes = ["enc.stack.0", "enc.stack.1"]
    assert layer_of("vision.perceiver.layers.0.cross_attn.q.weight", prefixes) == "vision.perceiver.layers.0"
    assert layer_of("vision_model.encoder.layers.11.mlp.fc1.bias", prefixes) == "vision_model.encoder.layers.11"
    assert layer_of("enc.stack.1.ff.weight", prefixes) == "enc.stack.1"
    assert layer_of("proj.weight", prefixes) == "proj"
    assert layer_of("logit_scale", prefixes) == "<root>"


def test_nan_in_backward_is_counted_not_raised():
    torch.manual_seed(0)
    model = Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    x[3, 1] = float("nan")
    with attach(model, optimizer=opt, probes="all", strict=True) as session:
        out = model(x)
        loss = out.mean()
        loss.backward()
        session.observe(
            0,
            losses={"loss_clip": loss, "total": loss},
            weights={"loss_clip": 1.0},
            embeddings={"image": out.unsqueeze(1).repeat(1, 3)},
            logits={"image_to_text": out.unsqueeze(1) * out.unsqueeze(0)},
            batch_size=8,
        )
        opt.step()
    df = session.records
    assert session.errors == []
    g = _values(df, "gradient_flow")
    assert g[("embed.weight", "nonfinite_grad")] > 0
    assert math.isnan(g[("embed.weight", "grad_norm")])
    assert _values(df, "gradient_flow.model")[("model", "nonfinite_grad")] > 0
    assert _values(df, "loss_split")[("loss_clip", "nonfinite")] == 1.0
    assert _values(df, "collapse")[("image", "nonfinite_rows")] == 1.0
    assert _values(df, "softmax_entropy")[("logits.image_to_text", "nonfinite")] > 0


def test_no_update_recorded_for_a_step_interrupted_before_the_optimizer():
    model = Toy()
    with pytest.raises(KeyboardInterrupt):
        with attach(model, probes="cheap", strict=True) as session:  # no optimizer, no after_step
            model(torch.randn(4, 4)).sum().backward()
            session.observe(0)
            raise KeyboardInterrupt
    df = session.records
    assert (df.metric == "grad_norm").any()
    assert not (df.metric == "update_to_param").any()


def _records_of(model_fn, monkeypatch=None, steps=2):
    torch.manual_seed(0)
    model = model_fn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randn(16)
    with attach(model, optimizer=opt, probes=["gradient_flow"], strict=True) as session:
        for step in range(steps):
            opt.zero_grad()
            loss = ((model(x.to(model.embed.weight.dtype)) - y) ** 2).mean()
            loss.backward()
            session.observe(step)
            opt.step()
    return session.records.sort_values(["step", "probe", "target", "metric"]).reset_index(drop=True)


def test_mixed_dtypes_are_measured_per_group_with_the_same_records():
    """One fused call per (device, dtype): a float64 head among float32 parameters gets its own group; the
    records (values per parameter and per aggregate) match the all-float32 model's to float32 rounding."""
    def mixed():
        m = Toy()
        m.head.double()
        m.forward = lambda x: m.head(torch.relu(m.layers[1](m.layers[0](m.embed(x)))).double()).squeeze(-1).float() \
            * m.scale
        return m

    def plain():
        m = Toy()
        m.forward = lambda x: m.head(torch.relu(m.layers[1](m.layers[0](m.embed(x))))).squeeze(-1) * m.scale
        return m

    a, b = _records_of(mixed), _records_of(plain)
    assert list(zip(a.step, a.probe, a.target, a.metric)) == list(zip(b.step, b.probe, b.target, b.metric))
    assert a.value.to_numpy() == pytest.approx(b.value.to_numpy(), rel=1e-4, abs=1e-7, nan_ok=True)


def test_loop_fallback_where_foreach_is_unavailable(monkeypatch):
    """A device without a foreach norm kernel: the per-tensor loop gives the same records."""
    fused = _records_of(Toy)

    def unavailable(*args, **kwargs):
        raise NotImplementedError("no foreach kernel here")

    monkeypatch.setattr(torch, "_foreach_norm", unavailable)
    looped = _records_of(Toy)
    assert looped.value.to_numpy() == pytest.approx(fused.value.to_numpy(), rel=1e-6, nan_ok=True)


def test_norms_reach_the_host_in_a_few_tensors_whatever_the_number_of_parameters():
    """The step's values wait as one norm vector per kind and group, not one scalar per parameter."""
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(30)])  # 60 parameter tensors
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with attach(model, optimizer=opt, probes=["gradient_flow"], strict=True) as session:
        model(torch.randn(8, 4)).sum().backward()
        session.observe(0)
        opt.step()
        opt.zero_grad()
        model(torch.randn(8, 4)).sum().backward()
        original, seen = session.buffer.flush, []
        session.buffer.flush = lambda wait=True: (seen.extend(v for _, _, vs, _ in session.buffer._later for v in vs),
                                        original())[1]
        session.observe(1)
        session.buffer.flush = original
        opt.step()
    # the update norms of step 0, the param norms it is measured against (kept on the device since step 0's
    # observe) and the update's turning part per tensor, the outside writes' (the update norms again and one table
    # of the samples' sums), then param norms, grad norms and non-zero counts (one group)
    assert len(seen) == 8
    assert all(isinstance(v, torch.Tensor) and v.numel() in (60, 2 * 60, 3 * 60) for v in seen)


def test_rows_follow_which_parameters_have_gradients_step_by_step():
    """The row layout is cached per pattern of gradients present: a module used only on odd steps gets
    grad_is_none on even steps and its five metrics on odd ones, and so does its layer aggregate."""
    torch.manual_seed(0)
    model = Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 4)
    with attach(model, optimizer=opt, probes=["gradient_flow"], strict=True) as session:
        for step in range(4):
            opt.zero_grad(set_to_none=True)
            out = model(x)
            if step % 2:
                out = out + model.unused(model.embed(x)).sum(-1)
            out.pow(2).mean().backward()
            session.observe(step)
            opt.step()
    for step in range(4):
        got = _values(session.records, "gradient_flow", step)
        mod = _values(session.records, "gradient_flow.module", step)
        if step % 2:
            assert ("unused.weight", "grad_is_none") not in got and got[("unused.weight", "grad_norm")] > 0
            assert ("unused", "grad_is_none") not in mod and mod[("unused", "grad_is_none_frac")] == 0.0
        else:
            assert got[("unused.weight", "grad_is_none")] == 1.0 and ("unused.weight", "grad_norm") not in got
            assert mod[("unused", "grad_is_none")] == 1.0
        assert got[("unused.weight", "param_norm")] > 0


def _sampled_run(steps, full_every=None, nan_at=None):
    """Adam on Toy under the gradient probe for `steps` steps; returns the session and, per step, the
    gradients and the parameters before and after the optimizer step."""
    torch.manual_seed(0)
    model = Toy()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(16, 4), torch.randn(16)
    kw = {} if full_every is None else {"full_every": full_every}
    snaps = []
    with attach(model, optimizer=opt, probes=["gradient_flow"], strict=True, **kw) as session:
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            xs = x.clone()
            if step == nan_at:
                xs[0, 0] = float("nan")
            ((model(xs) - y) ** 2).mean().backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            session.observe(step)
            if step != nan_at:  # a NaN step is not applied (as a grad scaler would skip it)
                opt.step()
            snaps.append((grads, before, {n: p.detach().clone() for n, p in model.named_parameters()}))
    return session, snaps


def test_full_measurement_on_sampled_steps_grad_norm_on_every_step():
    """Every metric on the first 50 measured steps, then one in 2 (the spacing grows with the run:
    `probes.schedule.FullSchedule`); the other steps only the model's grad norm and non-finite count, which
    still match autograd; the update measured on a sampled step after a light one is against that step's own
    weights (the snapshot is refreshed, not left from the last full step)."""
    session, snaps = _sampled_run(60)
    df = session.records
    full = sorted(set(df[df.metric == "update_to_param"].step))
    assert full == [*range(49), 50, 52, 54, 56, 58]
    for step, (grads, before, after) in enumerate(snaps):
        model_rows = _values(df, "gradient_flow.model", step)
        want = math.sqrt(sum(g.norm().item() ** 2 for g in grads.values()))
        assert model_rows[("model", "grad_norm")] == pytest.approx(want, rel=1e-5)
        assert model_rows[("model", "nonfinite_grad")] == 0.0
        if step in full:
            got = _values(df, "gradient_flow", step)
            for name in grads:
                up = ((after[name] - before[name]).norm() / before[name].norm()).item()
                assert got[(name, "update_to_param")] == pytest.approx(up, rel=1e-5, abs=1e-9), (step, name)
                assert got[(name, "zero_grad_frac")] == pytest.approx((grads[name] == 0).float().mean().item())
        else:  # and the outside writes (none here) where the step before measured its update
            outside = {("model", m) for m in ("outside_to_update", "outside_to_param", "outside_shrink")}
            assert set(model_rows) == {("model", "grad_norm"), ("model", "nonfinite_grad")} | (
                outside if step - 1 in full else set())
            assert not len(df[(df.step == step) & df.probe.isin(["gradient_flow", "gradient_flow.layer",
                                                                  "gradient_flow.module"])])
    assert set(df[df.metric == "outside_to_update"].value) == {0.0}
    line = session.coverage()["gradient_flow_full_steps"]
    assert "measured on 54 of 60 measured steps (every step of the first 50, then sparser up to one in 10" in line


def test_every_step_full_on_request():
    session, _ = _sampled_run(53, full_every=1)
    df = session.records
    assert sorted(set(df[df.metric == "update_to_param"].step)) == list(range(53))
    assert "on 53 of 53 measured steps (every measured step)" in session.coverage()["gradient_flow_full_steps"]


def test_nonfinite_gradient_on_a_light_step_is_counted_and_named():
    session, snaps = _sampled_run(52, nan_at=51)
    grads = snaps[51][0]
    df = session.records
    want = {n: float((~torch.isfinite(g)).sum()) for n, g in grads.items() if not torch.isfinite(g).all()}
    assert want  # the NaN input reaches the first layer's weight gradient
    got = _values(df, "gradient_flow", 51)
    assert got == {(n, "nonfinite_grad"): v for n, v in want.items()}
    model_rows = _values(df, "gradient_flow.model", 51)
    assert model_rows[("model", "nonfinite_grad")] == sum(want.values())
    assert math.isnan(model_rows[("model", "grad_norm")])


def test_full_schedule_spacing_grows_with_the_run_as_the_end_window_allows():
    """Spacing k while the last 20% of the steps hold 5 readings one in k apart (k <= steps / 25), up to
    `every`; expensive steps are full whatever the spacing."""
    from probes.schedule import FullSchedule

    sched = FullSchedule(every=4)
    got = [i for i in range(130) if sched.due(expensive=i == 101)]
    assert got[:49] == list(range(49))
    assert [s for s in got if 49 <= s < 75] == list(range(50, 74, 2))  # 50 readings: one in 2
    assert [s for s in got if 75 <= s < 100] == list(range(75, 99, 3))
    assert [s for s in got if s >= 100] == [100, 101, 104, 108, 112, 116, 120, 124, 128]  # `every` caps it at 4
    assert (sched.ran, sched.measured) == (len(got), 130)
    with pytest.raises(ValueError, match="every"):
        FullSchedule(every=0)


@pytest.mark.parametrize("lr, lost", [(1e-4, True), (3e-2, False)])
def test_bfloat16_weights_the_step_leaves_bit_identical_are_counted(lr, lost):
    """Adam moves every element by ~lr on its first step: in bfloat16 (8 significant bits) a step of 1e-4 on
    weights of ~0.1-1 rounds back to the old value; 3e-2 does not. float32 weights record nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 1)).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.empty_like(p).uniform_(0.25, 1.0))  # spacing at 0.25-1: 2^-9 - 2^-7 (2e-3 - 8e-3)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with attach(model, optimizer=opt, probes=["gradient_flow"]) as session:
        for step in range(3):
            loss = model(torch.randn(8, 16, dtype=torch.bfloat16)).float().pow(2).mean()
            opt.zero_grad()
            loss.backward()
            session.observe(step)
            opt.step()
    df = session.records
    same = df[df.metric == "low_precision_unchanged_frac"].value
    assert len(same) == 3 and (df[df.metric == "low_precision_share"].value == 1.0).all()  # the hook: every step
    assert ((same > 0.9) if lost else (same < 0.1)).all(), same.tolist()
    plain = _records_of(Toy)
    assert not (plain.metric == "low_precision_unchanged_frac").any()
