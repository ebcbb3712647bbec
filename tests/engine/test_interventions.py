"""The interventions of `diagnose ablate -- python train.py`, applied in-process through a watch opened under
the ablation's environment (`diagnose.engine.ablation_env`): each changes what it declares, and says when it
cannot act instead of running as a no-op."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import diagnose
from diagnose.engine.interventions import CATALOGUE, NotApplicable, for_cause, make
from diagnose.engine.interventions.logits import mask_duplicate_candidates, mask_twin_candidates
from diagnose.engine.interventions.temperature import measured_scale

B, DIN, E = 16, 12, 8


class Towers(nn.Module):
    def __init__(self, log_scale: bool = True):
        super().__init__()
        self.image = nn.Linear(DIN, E)
        self.text = nn.Linear(DIN, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07) if log_scale else 0.07))

    def forward(self, x, t):
        return F.normalize(self.image(x), dim=-1), F.normalize(self.text(t), dim=-1)


def step(model, opt, w, i, x, t, *, divided: bool = False, loss_fn=None):
    img, txt = model(x, t)
    scale = model.logit_scale.exp()
    logits = img @ txt.t() / scale if divided else scale * img @ txt.t()
    labels = torch.arange(len(x))
    loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    opt.zero_grad()
    loss.backward()
    w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
    opt.step()
    return loss


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, DIN, generator=g), torch.randn(B, DIN, generator=g)


def test_catalogue_declares_causes_that_exist():
    from diagnose.core.rules.causes import BY_ID

    for name, cls in CATALOGUE.items():
        assert cls.tests and all(c in BY_ID for c in cls.tests), name
        assert cls.changes
    assert for_cause("learning_rate_too_high") == ["lr_down", "warmup", "clip_grad"]


def test_lr_down_scales_every_step_and_gives_the_schedule_its_lr_back(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    under_ablation("lr_down", guard=1e9, target_ratio=1e9)  # the plain x0.1 (this toy's steps at lr 0.05 are large)
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        before = model.image.weight.detach().clone()
        step(model, opt, w, 0, x, t)
        grad = model.image.weight.grad.clone()
        moved = model.image.weight.detach() - before
        assert torch.allclose(moved, -0.05 * grad, atol=1e-6)  # 0.5 x 0.1
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5)  # the user's value, for the scheduler
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.25)


@pytest.mark.parametrize("fix", ["lr_down", "centre_inputs", "fix_temperature"])
def test_a_fix_records_that_it_reached_the_run_only_where_it_changed_a_tensor(under_ablation, fix):
    """`reached`: the evidence that tells a fix the loss ignores (refuted) from one that did nothing (not
    applicable) when a run ends at its baseline's loss to the last bit. Zeroed heads: no gradient reaches any
    weight, so a changed lr moves nothing; the centred input and the moved logit scale are still changes."""
    def run(zero_heads: bool) -> list[str]:
        torch.manual_seed(0)
        model = Towers()
        if zero_heads:
            for head in (model.image, model.text):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
            model.logit_scale.data.fill_(0.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        spec = under_ablation(fix, steps=0)
        x, t = batch()
        with diagnose.watch(model, opt, batch_size=B) as w:
            for i in range(3):
                step(model, opt, w, i, x + 3.0, t)
        return json.loads(open(spec["status"]).read())["reached"]

    healthy, zeroed = run(False), run(True)
    assert healthy, f"{fix}: no reach recorded on a run it changes"
    if fix == "lr_down":
        assert healthy[0].startswith("optimizer step 1") and zeroed == []  # zero gradients: no weight moved
    else:
        assert zeroed  # the input / the logit scale changed although the loss cannot show it


def test_hold_lr_on_a_schedule_never_stepped_records_no_reach(under_ablation):
    # OneCycleLR sets the lr it starts with; never stepped, holding its initial_lr is (up to rounding) no change
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=100)
    opt.param_groups[0]["lr"] *= 1 + 1e-9  # a schedule's own rounding of the same lr
    spec = under_ablation("hold_lr")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(3):
            step(model, opt, w, i, x, t)
    assert json.loads(open(spec["status"]).read())["reached"] == []


def test_hold_lr_steps_at_the_starting_lr_when_the_schedule_decays_to_zero(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.0 if s >= 1 else 1.0)
    under_ablation("hold_lr")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        step(model, opt, w, 0, x, t)
        sched.step()
        assert opt.param_groups[0]["lr"] == 0.0
        before = model.image.weight.detach().clone()
        step(model, opt, w, 1, x, t)
        assert not torch.equal(before, model.image.weight.detach())  # moved at lr 0.1, not 0


@pytest.mark.parametrize("scripted", [False, True])
def test_step_schedule_steps_a_scheduler_the_script_never_steps(under_ablation, scripted):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    ref = torch.optim.lr_scheduler.OneCycleLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), max_lr=1.0,
                                              total_steps=10)
    spec = under_ablation("step_schedule")
    x, t = batch()
    lrs, want = [], []
    if scripted:
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                for i in range(4):
                    step(model, opt, w, i, x, t)
                    sched.step()
        assert "the script steps every scheduler" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(4):
            step(model, opt, w, i, x, t)
            lrs.append(sched.get_last_lr()[0])
            want.append(ref.get_last_lr()[0])
            ref.optimizer.step()
            ref.step()
    assert lrs[0] == pytest.approx(1.0 / 25) and lrs[1:] == pytest.approx(want[1:])  # the schedule runs
    assert lrs[-1] > 0.3  # the warm-up towards max_lr happened
    assert "stepped OneCycleLR 3 time(s)" in json.loads(open(spec["status"]).read())["applied"][0]


def test_step_schedule_fills_in_the_steps_of_a_scheduler_the_script_steps_per_epoch(under_ablation):
    # a CyclicLR sized in batches, stepped by the script once per "epoch" of 3 batches: in all it advances once
    # per optimizer step, the script's own step counting for the batch it follows
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=1e-3, max_lr=1.0, step_size_up=100, cycle_momentum=False)
    spec = under_ablation("step_schedule")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(9):
            step(model, opt, w, i, x, t)
            if i % 3 == 2:
                sched.step()
    assert sched.last_epoch == 9  # 6 steps of ours, 3 of the script's
    applied = json.loads(open(spec["status"]).read())["applied"][0]
    assert "stepped CyclicLR 6 time(s)" in applied and "the script stepped it after 2" in applied


@pytest.mark.parametrize("divided", [False, True])
def test_fix_temperature_finds_the_parameter_by_the_logits_it_scales(under_ablation, divided):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("fix_temperature")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(3):
            step(model, opt, w, i, x, t, divided=divided)
    # divided by exp(p): the scale is exp(-p), held at 14.29 means p = -ln(14.29)
    expected = -math.log(1 / 0.07) if divided else math.log(1 / 0.07)
    assert float(model.logit_scale) == pytest.approx(expected, rel=1e-5)
    assert not model.logit_scale.requires_grad


@pytest.mark.parametrize("bound", [4.6052, 100.0])
def test_fix_temperature_is_not_applicable_where_a_clamp_after_the_parameter_pins_the_scale(under_ablation, bound):
    """`logit_scale.exp().clamp(0, 4.6052)` (ln 100 written as the bound of the scale): holding the parameter at
    ln(14.29) leaves the logits at 4.6, a run that would change nothing; with the bound at 100 the hold reaches them."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("fix_temperature")
    x, t = batch()
    labels = torch.arange(B)
    scales = []

    def run():
        with diagnose.watch(model, opt, batch_size=B) as w:
            for i in range(3):
                img, txt = model(x, t)
                scale = model.logit_scale.exp().clamp(0, bound)
                scales.append(float(scale))
                loss = F.cross_entropy(scale * img @ txt.t(), labels)
                opt.zero_grad()
                loss.backward()
                w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                          logits=scale * img @ txt.t())
                opt.step()

    if bound == 100.0:
        run()
        assert scales == pytest.approx([1 / 0.07] * 3, rel=1e-5)
        return
    with pytest.raises(SystemExit) as exc:
        run()
    assert exc.value.code == 0
    assert scales == pytest.approx([4.6052, 4.6052], rel=1e-5)  # stopped at the second step's observe
    assert "the logits still carry scale 4.61 (4.61 before; target 14.29)" in \
        json.loads(open(spec["status"]).read())["not_applicable"]


def constant_scale_steps(w, model, opt, x, t, scale: float, steps: int, hand_written: bool = False,
                         softmax: bool = False) -> list:
    """A temperature written as a constant (`scale * img @ txt.t()`, no parameter): the losses the script saw."""
    labels, losses = torch.arange(len(x)), []
    for i in range(steps):
        img, txt = model(x, t)
        logits = scale * img @ txt.t()
        if softmax:  # probabilities handed to the cross-entropy (and to observe) as if they were logits
            logits = logits.softmax(-1)
        if hand_written:
            loss = -0.5 * (logits.log_softmax(-1).diagonal().mean() + logits.t().log_softmax(-1).diagonal().mean())
        else:
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        losses.append((loss.item(), img.detach(), txt.detach()))
        opt.zero_grad()
        loss.backward()
        w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        opt.step()
    return losses


def test_rescale_logits_sets_a_constant_temperature_at_the_cross_entropy(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if n != "logit_scale"], lr=0.1)
    orig, labels = F.cross_entropy, torch.arange(B)
    spec = under_ablation("rescale_logits")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        seen = constant_scale_steps(w, model, opt, x, t, 0.05, 3)  # `scale=0.05` meant as a temperature
    assert F.cross_entropy is orig  # the wrapper is gone when the watch closes

    def clip(logits):
        return float(0.5 * (orig(logits, labels) + orig(logits.t(), labels)))
    (l0, i0, t0), (l1, i1, t1) = seen[:2]
    assert l0 == pytest.approx(clip(0.05 * i0 @ t0.t()), rel=1e-5)  # the first step runs as written
    assert l1 == pytest.approx(clip(1 / 0.07 * i1 @ t1.t()), rel=1e-4)  # then at CLIP's scale
    status = json.loads(open(spec["status"]).read())
    assert status["not_applicable"] is None and "measured at scale 0.05" in status["applied"][0]


@pytest.mark.parametrize("case", ["hand_written", "already_at_scale", "softmax"])
def test_rescale_logits_says_when_it_cannot_act(under_ablation, case):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    orig = F.cross_entropy
    spec = under_ablation("rescale_logits")
    x, t = batch()
    with pytest.raises(SystemExit) as exc:
        with diagnose.watch(model, opt, batch_size=B) as w:
            constant_scale_steps(w, model, opt, x, t, 1 / 0.07 if case == "already_at_scale" else 1.0, 3,
                                 hand_written=case == "hand_written", softmax=case == "softmax")
    assert exc.value.code == 0 and F.cross_entropy is orig
    reason = json.loads(open(spec["status"]).read())["not_applicable"]
    expected = {"hand_written": "no cross_entropy call received logits",
                "already_at_scale": "already carry scale 14.29",
                "softmax": "scale times the embeddings' dot products"}[case]
    assert expected in reason


@pytest.mark.parametrize("softmax", [True, False])
def test_log_probabilities_gives_the_cross_entropy_the_log_of_a_softmax(under_ablation, softmax):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if n != "logit_scale"], lr=0.1)
    orig, labels = F.cross_entropy, torch.arange(B)
    spec = under_ablation("log_probabilities")
    x, t = batch()
    if not softmax:
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                constant_scale_steps(w, model, opt, x, t, 1 / 0.07, 3)
        assert "no cross-entropy call received probabilities" in \
            json.loads(open(spec["status"]).read())["not_applicable"]
        return
    with diagnose.watch(model, opt, batch_size=B) as w:
        seen = constant_scale_steps(w, model, opt, x, t, 1 / 0.07, 2, softmax=True)
    for loss, img, txt in seen:  # the row softmax: exactly the loss on the logits before it; its transpose (columns
        z = 1 / 0.07 * img @ txt.t()  # sum to 1, rows do not) is left as it was
        assert loss == pytest.approx(float(0.5 * (orig(z, labels) + orig(z.softmax(-1).t(), labels))), rel=1e-4)


@pytest.mark.parametrize("targets", ["zeros", "class_ids", "soft", "pairs", "zeros_declared"])
def test_diagonal_targets_gives_each_row_its_own_pair(under_ablation, targets):
    """Without the batch size the logits' shape is known from the first observe (step 0 runs as written); with it,
    from the first step."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    orig = F.cross_entropy
    spec = under_ablation("diagonal_targets")
    x, t = batch()
    given = {"zeros": torch.zeros(B, dtype=torch.long), "class_ids": torch.arange(B) % 3,
             "soft": torch.full((B, B), 1.0 / B), "pairs": torch.arange(B),
             "zeros_declared": torch.zeros(B, dtype=torch.long)}[targets]
    declared = {"batch_size": B} if targets == "zeros_declared" else {}
    losses = []

    def run(w, steps):
        for i in range(steps):
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = 0.5 * (F.cross_entropy(logits, given) + F.cross_entropy(logits.t(), given))
            losses.append((loss.item(), logits.detach()))
            opt.zero_grad()
            loss.backward()
            w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()

    if targets == "pairs":
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, **declared) as w:
                run(w, 3)
        assert "already take each row's own pair" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    with diagnose.watch(model, opt, **declared) as w:
        run(w, 2)
    assert F.cross_entropy is orig
    (l0, z0), (l1, z1) = losses
    labels = torch.arange(B)
    first = labels if declared else given
    assert l0 == pytest.approx(float(0.5 * (orig(z0, first) + orig(z0.t(), first))), rel=1e-5)
    assert l1 == pytest.approx(float(0.5 * (orig(z1, labels) + orig(z1.t(), labels))), rel=1e-5)  # the pairs
    n = 4 if declared else 2
    assert f"replaced the targets of {n} cross-entropy call(s)" in \
        json.loads(open(spec["status"]).read())["applied"][0]


@pytest.mark.parametrize("dim", [0, -1])
def test_normalise_rows_normalises_each_embedding_where_the_script_normalised_features(under_ablation, dim):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    orig = F.normalize
    spec = under_ablation("normalise_rows")
    x, t = batch()
    norms = []

    def run(w, steps):
        for i in range(steps):
            img, txt = F.normalize(model.image(x), dim=dim), F.normalize(model.text(t), dim=dim)
            norms.append(img.norm(dim=-1))
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = F.cross_entropy(logits, torch.arange(B))
            opt.zero_grad()
            loss.backward()
            w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()

    if dim == -1:  # the script already normalises each embedding: nothing to do
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                run(w, 3)
        assert "no F.normalize call along the batch axis" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    with diagnose.watch(model, opt, batch_size=B) as w:
        run(w, 2)
    assert F.normalize is orig
    assert all(torch.allclose(n, torch.ones(B), atol=1e-5) for n in norms)  # unit rows, not unit columns
    assert "4 F.normalize call(s)" in json.loads(open(spec["status"]).read())["applied"][0]


def test_normalise_rows_reaches_a_views_gram_matrix_when_no_logits_are_handed_over(under_ablation):
    """SupCon over stacked views normalised along the views axis (dim=1 of (B, 2, E)); only embeddings reach
    observe. The loss's `contrast @ contrast.t()` (2B x 2B) is computed on unit rows from the first step."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("normalise_rows")
    x, t = batch()
    diagonals = []
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(2):
            feats = F.normalize(torch.stack([model.image(x), model.text(t)], dim=1), dim=1)
            contrast = torch.cat(torch.unbind(feats, dim=1))
            logits = contrast @ contrast.t() / 0.07
            diagonals.append(logits.diagonal().detach())
            loss = F.cross_entropy(logits - 1e4 * torch.eye(2 * B), torch.arange(2 * B).roll(B))
            opt.zero_grad()
            loss.backward()
            w.observe(i, losses={"clip": loss}, embeddings={"image": feats[:, 0], "text": feats[:, 1]})
            opt.step()
    assert all(torch.allclose(d, torch.full((2 * B,), 1 / 0.07), atol=1e-3) for d in diagonals)  # unit rows


class _GramLoss(nn.Module):
    """A SupCon-style loss written as a module (no parameters): the Gram matrix of the stacked views."""

    def forward(self, feats):
        contrast = torch.cat(torch.unbind(feats, dim=1))
        logits = contrast @ contrast.t() / 0.07
        return F.cross_entropy(logits - 1e4 * torch.eye(len(logits)), torch.arange(len(logits)).roll(B)), logits


@pytest.mark.parametrize("in_model", [False, True])
def test_normalise_rows_reaches_the_product_inside_a_loss_module_of_the_script_not_inside_the_model(under_ablation,
                                                                                                   in_model):
    torch.manual_seed(0)
    model = Towers()
    criterion = _GramLoss()
    if in_model:  # the same parameter-free module registered in the model: part of its forward, left alone
        model.add_module("criterion", criterion)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("normalise_rows")
    x, t = batch()
    diagonals = []

    def run(w, steps):
        for i in range(steps):
            feats = torch.stack([model.image(x), model.text(t)], dim=1)  # not normalised at all
            loss, logits = criterion(feats)
            diagonals.append(logits.diagonal().detach())
            opt.zero_grad()
            loss.backward()
            w.observe(i, losses={"supcon": loss}, embeddings={"image": feats[:, 0], "text": feats[:, 1]})
            opt.step()

    if in_model:
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                run(w, 3)
        assert "no product of rows that were not unit" in json.loads(open(spec["status"]).read())["not_applicable"]
        assert not torch.allclose(diagonals[-1], torch.full((2 * B,), 1 / 0.07), atol=1e-2)
        return
    with diagnose.watch(model, opt, batch_size=B) as w:
        run(w, 2)
    assert torch.allclose(diagonals[-1], torch.full((2 * B,), 1 / 0.07), atol=1e-3)  # unit rows in the loss module


@pytest.mark.parametrize("norm", ["none", "frobenius", "unit"])
def test_normalise_rows_computes_the_logits_product_on_unit_rows(under_ablation, norm):
    """No F.normalize to move: the script's `scale * img @ txt.t()` is computed on unit rows, the scale kept; the
    watch's probes and the model's own products are left alone; already unit rows: not applicable."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("normalise_rows")
    x, t = batch()
    seen = []
    by = {"none": lambda v: v, "frobenius": lambda v: v / v.norm(), "unit": lambda v: v / v.norm(dim=-1, keepdim=True)}

    def run(w, steps):
        for i in range(steps):
            img, txt = by[norm](model.image(x)), by[norm](model.text(t))
            logits = model.logit_scale.exp() * img @ txt.t()
            seen.append((logits.detach(), img.detach(), txt.detach(), model.logit_scale.exp().item()))
            loss = F.cross_entropy(logits, torch.arange(B))
            opt.zero_grad()
            loss.backward()
            w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()

    if norm == "unit":
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                run(w, 3)
        assert "no product of rows that were not unit" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    with diagnose.watch(model, opt, batch_size=B) as w:
        run(w, 2)
    for logits, img, txt, scale in seen:
        want = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
        assert torch.allclose(logits, want, atol=1e-4)
        assert logits.abs().max() <= scale + 1e-3  # cosines times the scale
    assert "2 product(s) into the logits computed on unit rows" in \
        json.loads(open(spec["status"]).read())["applied"][1]
    z = torch.randn(B, E) @ torch.randn(E, B)  # after close: no mode left behind
    assert z.abs().max() > 0


def test_diagonal_targets_moves_hand_written_soft_targets_onto_the_pairs(under_ablation):
    """`-(targets * log_softmax(logits)).sum(1)` with targets from the model's own similarities (the OpenAI-CLIP
    tutorial): each row's target mass goes onto its own pair, the minus sign kept."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("diagonal_targets")
    x, t = batch()
    losses = []
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(2):
            img, txt = model(x, t)
            logits = txt @ img.t() / 0.1
            targets = F.softmax((img @ img.t() + txt @ txt.t()) / 2 * 0.1, dim=-1)
            loss = ((-targets * F.log_softmax(logits, dim=-1)).sum(1)
                    + (-targets.t() * F.log_softmax(logits.t(), dim=-1)).sum(1)).mean() / 2
            losses.append((loss.item(), logits.detach()))
            opt.zero_grad()
            loss.backward()
            w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits.t())
            opt.step()
    labels = torch.arange(B)
    for loss, z in losses:
        assert loss == pytest.approx(float(0.5 * (F.cross_entropy(z, labels) + F.cross_entropy(z.t(), labels))),
                                     rel=1e-5)
    assert "replaced the targets of 4 cross-entropy call(s)" in json.loads(open(spec["status"]).read())["applied"][0]


def test_linear_residual_tells_a_scaled_similarity_from_a_softmax_of_one():
    from diagnose.engine.interventions.rescale_logits import LINEAR_RESIDUAL, linear_residual

    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(8, 4, generator=g), dim=-1)
    txt = F.normalize(torch.randn(8, 4, generator=g), dim=-1)
    emb = {"image": img, "text": txt}
    assert linear_residual(0.05 * img @ txt.t(), emb, 0.05) < 1e-5
    assert linear_residual(14.0 * img @ txt.t() + 2.0, emb, 14.0) > LINEAR_RESIDUAL  # a bias in between
    probs = (14.0 * img @ txt.t()).softmax(-1)
    assert linear_residual(probs, emb, float((probs.diagonal() / (img * txt).sum(-1)).median())) > LINEAR_RESIDUAL


def test_measured_scale_reads_the_diagonal_over_the_dot_products():
    img = F.normalize(torch.randn(8, 4), dim=-1)
    txt = F.normalize(torch.randn(8, 4), dim=-1)
    seen = {"logits": 7.5 * img @ txt.t(), "embeddings": {"image": img, "text": txt}}
    assert measured_scale(seen) == pytest.approx(7.5, rel=1e-4)
    assert measured_scale({"logits": None}) is None


def test_add_missing_params_puts_the_left_out_tower_into_the_optimizer(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD([*model.image.parameters(), model.logit_scale], lr=0.1)
    under_ablation("add_missing_params")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        before = model.text.weight.detach().clone()
        step(model, opt, w, 0, x, t)
        assert not torch.equal(before, model.text.weight.detach())
    assert len(opt.param_groups) == 2



@pytest.mark.parametrize("make", [
    lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s)),
    lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10),
    lambda opt: torch.optim.lr_scheduler.SequentialLR(opt, [torch.optim.lr_scheduler.LinearLR(opt, 0.1, total_iters=2),
                                                           torch.optim.lr_scheduler.ConstantLR(opt, 1.0)],
                                                      milestones=[2])])
def test_add_missing_params_extends_the_schedulers_built_on_the_optimizer(under_ablation, make):
    """torch's schedulers zip their per-group lists strictly with the param groups: the group the fix adds follows
    group 0's schedule (before, the script's next scheduler.step() raised and the fix run failed)."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD([*model.image.parameters(), model.logit_scale], lr=0.1)
    sched = make(opt)
    under_ablation("add_missing_params")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(4):
            step(model, opt, w, i, x, t)
            sched.step()
    assert len(opt.param_groups) == 2
    assert opt.param_groups[1]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_add_missing_params_gives_the_new_group_the_optimizer_defaults_not_group_0s(under_ablation):
    """Hand-built groups listing the backbone first at a small lr, the heads' group never appended: the heads join
    as a group that names no settings (the constructor's lr, 1e-3), not at the first group's 1e-5; a LambdaLR built
    on the optimizer scales the new group from its own start lr."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.AdamW([{"params": [*model.image.parameters()], "lr": 1e-5}], lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    under_ablation("add_missing_params")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(3):
            step(model, opt, w, i, x, t)
            sched.step()
    assert len(opt.param_groups) == 2
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 / 4)
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-3 / 4)
    assert opt.param_groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize("whole_loop", [True, False])
def test_clear_autocast_cache_lets_the_forward_see_the_updated_weights(under_ablation, whole_loop):
    """One autocast region around the whole loop: without the fix the forward keeps the first step's bf16 casts
    (the output does not change although the weights do); with it the next forward casts the updated weights. A
    region around the forward and the loss only has no cache that outlives a step: not applicable."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    spec = under_ablation("clear_autocast_cache")
    x, t = batch()
    if not whole_loop:
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                for i in range(3):
                    with torch.autocast("cpu", dtype=torch.bfloat16):  # the forward and the loss only
                        img, txt = model(x, t)
                        logits = model.logit_scale.exp() * img @ txt.t()
                        loss = F.cross_entropy(logits.float(), torch.arange(B))
                    opt.zero_grad()
                    loss.backward()
                    w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
                    opt.step()
        assert "no autocast region" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    outer = torch.autocast("cpu", dtype=torch.bfloat16)
    with diagnose.watch(model, opt, batch_size=B) as w, outer:
        for i in range(3):
            step(model, opt, w, i, x, t)
        out = model.image(x).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        now = model.image(x).float()  # a fresh region: the weights as they are
    assert torch.equal(out, now)


class Delegating(torch.optim.Optimizer):
    """A wrapper whose step delegates to a base optimizer kept in its state (SAM / Bayesian wrappers do)."""

    def __init__(self, params, **kw):
        params = list(params)
        super().__init__(params, dict(kw))
        self.state["base"] = torch.optim.SGD(params, **kw)

    def step(self, closure=None):
        return self.state["base"].step(closure)


@pytest.mark.parametrize("fix", [None, "relink_optimizer"])
def test_relink_optimizer_makes_a_stale_base_optimizer_step_the_model(under_ablation, fix, tmp_path):
    """Resumed the usual way, `load_state_dict` replaces the wrapper's base optimizer with the pickled one, whose
    param groups hold the checkpoint's copies: the model never moves, unless the fix relinks them."""
    torch.manual_seed(0)
    model = Towers()
    saved = {"model": model.state_dict(), "optimizer": Delegating(model.parameters(), lr=0.1).state_dict()}
    torch.save(saved, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    model = Towers()
    model.load_state_dict(ckpt["model"])
    opt = Delegating(model.parameters(), lr=0.1)
    opt.load_state_dict(ckpt["optimizer"])
    assert all(p is not q for p, q in zip(opt.state["base"].param_groups[0]["params"], model.parameters()))
    spec = under_ablation(fix)
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        before = model.image.weight.detach().clone()
        step(model, opt, w, 0, x, t)
    assert torch.equal(before, model.image.weight.detach()) == (fix is None)
    if fix:
        assert "5 tensor(s) in `optimizer.state['base']`" in json.loads(open(spec["status"]).read())["applied"][0]


def test_relink_optimizer_is_not_applicable_when_the_optimizer_steps_the_model(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = Delegating(model.parameters(), lr=0.1)
    spec = under_ablation("relink_optimizer")
    with pytest.raises(SystemExit):
        with diagnose.watch(model, opt, batch_size=B):
            pass
    assert "no stale copies" in json.loads(open(spec["status"]).read())["not_applicable"]


def _scaled_setup(fix: str, under_ablation):
    """Towers under SGD with a GradScaler (init scale 2**10), the fix's spec, a batch and its labels."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    return model, opt, scaler, under_ablation(fix), batch(), torch.arange(B)


def _scaled_backward(model, opt, scaler, x, t, labels):
    img, txt = model(x, t)
    logits = model.logit_scale.exp() * img @ txt.t()
    loss = F.cross_entropy(logits, labels)
    opt.zero_grad()
    scaler.scale(loss).backward()
    return {"losses": {"clip": loss}, "embeddings": {"image": img, "text": txt}, "logits": logits}


@pytest.mark.parametrize("proper", [False, True])
def test_scaler_step_unscales_a_plain_optimizer_step_after_a_scaled_backward(under_ablation, proper):
    """`scaler.scale(loss).backward(); optimizer.step()`: the fix steps with the unscaled gradient, once per step,
    and updates the scale; a script that already calls scaler.step is left alone (not applicable)."""
    model, opt, scaler, spec, (x, t), labels = _scaled_setup("scaler_step", under_ablation)

    def one(w, i):
        w.observe(i, **_scaled_backward(model, opt, scaler, x, t, labels))
        scaled = model.image.weight.grad.clone()
        before = model.image.weight.detach().clone()
        if proper:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return before - model.image.weight.detach(), scaled

    if proper:
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                for i in range(3):
                    one(w, i)
        assert "steps through scaler.step" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    with diagnose.watch(model, opt, batch_size=B) as w:
        moved, scaled = one(w, 0)
        assert torch.allclose(moved, 0.1 * scaled / 2 ** 10, atol=1e-7)  # lr x the unscaled gradient
        one(w, 1)
    assert "unscaled the gradients of 2 step(s)" in json.loads(open(spec["status"]).read())["applied"][0]


@pytest.mark.parametrize("proper", [False, True])
def test_unscale_before_clip_clips_the_true_gradient(under_ablation, proper):
    """`scaler.scale(loss).backward(); clip_grad_norm_(...); scaler.step(opt)`: the clip sees the scaled gradient and
    the step applies max_norm / scale. Under the fix the clip runs on the unscaled gradient (the step then applies the
    true one, clipped); a script that unscales first is left alone (not applicable)."""
    model, opt, scaler, spec, (x, t), labels = _scaled_setup("unscale_before_clip", under_ablation)

    def one(w, i):
        seen = _scaled_backward(model, opt, scaler, x, t, labels)
        if proper:
            scaler.unscale_(opt)
        total = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=100.0))
        w.observe(i, **seen)
        scaler.step(opt)
        scaler.update()
        return total

    if proper:
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                one(w, 0)
        assert "unscales the gradients before it clips" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    with diagnose.watch(model, opt, batch_size=B) as w:
        assert one(w, 0) < 100.0  # the clip saw the true norm (scaled, it would be 2**10 times that)
        one(w, 1)
    assert "before 2 clip(s)" in json.loads(open(spec["status"]).read())["applied"][0]
    assert torch.nn.utils.clip_grad_norm_.__name__ == "clip_grad_norm_"  # the patch is gone after the run


@pytest.mark.parametrize("relative", [True, False])
def test_own_step_off_gives_an_optimizer_that_sizes_its_own_steps_an_lr(under_ablation, relative):
    from transformers.optimization import Adafactor

    torch.manual_seed(0)
    model = Towers()
    opt = (Adafactor(model.parameters(), lr=None, relative_step=True, warmup_init=True) if relative
           else Adafactor(model.parameters(), lr=1e-3, relative_step=False))
    spec = under_ablation("own_step_off")
    x, t = batch()
    if not relative:
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B):
                pass
        assert "relative_step is not set" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    with diagnose.watch(model, opt, batch_size=B) as w:
        assert opt.param_groups[0]["lr"] == 1e-3 and not opt.param_groups[0]["relative_step"]
        step(model, opt, w, 0, x, t)
    status = json.loads(open(spec["status"]).read())
    assert "lr 0.001" in status["applied"][0]


@pytest.mark.parametrize("steps_itself", [False, True])
def test_step_optimizer_takes_the_step_a_script_never_reaches(under_ablation, steps_itself):
    """`if scheduler: scheduler.step() else: optimizer.step()`: no weight ever moves; under the fix the watch steps
    after each observe from the second on. A script that steps itself is left alone: not applicable."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100)
    spec = under_ablation("step_optimizer")
    x, t = batch()

    def one(w, i):
        img, txt = model(x, t)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = F.cross_entropy(logits, torch.arange(B))
        opt.zero_grad()
        loss.backward()
        w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        if steps_itself:
            opt.step()
        sched.step()

    before = model.image.weight.detach().clone()
    if steps_itself:
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                for i in range(3):
                    one(w, i)
        assert "steps the optimizer itself" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    with diagnose.watch(model, opt, batch_size=B) as w:
        one(w, 0)
        assert torch.equal(model.image.weight, before)  # the first step only shows whether the script steps
        for i in range(1, 4):
            one(w, i)
        fix = w.control.fix
    assert not torch.equal(model.image.weight, before)
    assert fix.did == ["optimizer.step() called after 3 observe(s) that no step of the script followed"]


@pytest.mark.parametrize("misordered", [True, False])
def test_zero_grad_after_step_lets_the_step_use_the_gradients(under_ablation, misordered):
    """`loss.backward(); optimizer.zero_grad(); optimizer.step()` never moves a weight; under the fix the zero_grad
    waits until the step has run. The usual order (zero_grad first) is left alone: not applicable."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    spec = under_ablation("zero_grad_after_step")
    x, t = batch()
    labels = torch.arange(B)

    def one(w, i):
        img, txt = model(x, t)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = F.cross_entropy(logits, labels)
        if not misordered:
            opt.zero_grad()
        loss.backward()
        if misordered:
            opt.zero_grad()
        w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        opt.step()

    if not misordered:
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                one(w, 0)
        assert "no zero_grad" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    before = model.image.weight.detach().clone()
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(3):
            one(w, i)
            assert all(p.grad is None for p in model.parameters())  # zeroed right after the step, as deferred
    assert not torch.equal(before, model.image.weight.detach())
    assert "3 zero_grad call(s)" in json.loads(open(spec["status"]).read())["applied"][0]
    assert "zero_grad" not in opt.__dict__  # the optimizer's own method is back


class ListedTowers(nn.Module):
    """The text tower kept in a plain list: model.parameters() does not hold it, the loss's graph does."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(DIN, E)
        self.towers = [nn.Linear(DIN, E)]
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x, t):
        return F.normalize(self.image(x), dim=-1), F.normalize(self.towers[0](t), dim=-1)


def test_add_missing_params_also_adds_a_tower_in_no_registered_module(under_ablation):
    torch.manual_seed(0)
    model = ListedTowers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("add_missing_params")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        before = model.towers[0].weight.detach().clone()
        step(model, opt, w, 0, x, t)
        assert not torch.equal(before, model.towers[0].weight.detach())  # the ablation stepped it
    assert len(opt.param_groups) == 2 and len(opt.param_groups[1]["params"]) == 2

def test_not_applicable_stops_at_once_and_says_why(under_ablation, tmp_path):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("unfreeze")
    with pytest.raises(SystemExit) as exc:
        diagnose.watch(model, opt, batch_size=B)
    assert exc.value.code == 0
    status = json.loads(open(spec["status"]).read())
    assert "no frozen parameter" in status["not_applicable"]
    assert not (tmp_path / "run").exists()  # nothing to report on a run that did not test the fix


def test_unfreeze_trains_a_frozen_tower(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    model.text.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    under_ablation("unfreeze")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        before = model.text.weight.detach().clone()
        step(model, opt, w, 0, x, t)
        assert not torch.equal(before, model.text.weight.detach())


def test_reinit_constant_redraws_a_zero_head_with_its_module_init_and_says_when_nothing_is_constant(under_ablation,
                                                                                                     tmp_path):
    torch.manual_seed(0)
    model = Towers()
    with torch.no_grad():
        model.image.weight.zero_()  # a zero-initialised head: no gradient reaches what feeds it, one output
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("reinit_constant")
    x, t = batch()
    text_before = model.text.weight.detach().clone()
    with diagnose.watch(model, opt, batch_size=B) as w:
        w_img = model.image.weight.detach()
        assert w_img.std() > 0 and w_img.abs().max() <= 1 / math.sqrt(DIN) + 1e-6  # nn.Linear's own init bound
        assert torch.equal(model.text.weight, text_before)  # untouched: it was not constant
        step(model, opt, w, 0, x, t)
    assert "reset 1 module(s) with their default init, bias included (image.weight)" in json.loads(
        open(spec["status"]).read())["applied"][0]
    # a constant tensor whose module has reset_parameters but no `weight` of its own: redrawn directly
    class Kernel(nn.Module):
        def __init__(self):
            super().__init__()
            self.kernel = nn.Parameter(torch.zeros(E, DIN))

        def reset_parameters(self):  # never the init of `kernel`: it has no `weight`
            raise AssertionError("reset_parameters called for a tensor that is not the module's weight")

    from diagnose.engine.interventions.reinit_constant import ReinitConstant

    holder = nn.ModuleDict({"k": Kernel()})
    fix = ReinitConstant()
    fix.setup(type("W", (), {"model": holder})())
    assert holder["k"].kernel.std() > 0 and "redrew 1 tensor(s) as nn.Linear does (k.kernel)" in fix.did[0]
    spec = under_ablation("reinit_constant")
    with pytest.raises(SystemExit):
        diagnose.watch(Towers(), torch.optim.SGD(Towers().parameters(), lr=0.1), batch_size=B)
    assert "no trainable weight tensor of 2 or more dimensions is constant" in json.loads(
        open(spec["status"]).read())["not_applicable"]


def test_reinit_constant_gives_a_zero_norm_gain_its_ones_and_leaves_zero_biases_alone():
    """A normalisation layer's gain of zeros (its output is zero: no gradient before it) is set to ones, nn.LayerNorm's
    through its reset_parameters, a hand-written RMSNorm without one directly; zero biases (their usual init) and a
    gain of ones are not constant weights."""
    from diagnose.engine.interventions.reinit_constant import ReinitConstant, constant_weights

    class RMSNorm(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    model = nn.ModuleDict({"rms": RMSNorm(E), "ln": nn.LayerNorm(E), "lin": nn.Linear(DIN, E)})
    with torch.no_grad():
        model["lin"].bias.zero_()
    assert [n for n, _ in constant_weights(model)] == ["rms.weight"]  # not the zero bias, not LayerNorm's ones
    with torch.no_grad():
        model["ln"].weight.zero_()
    fix = ReinitConstant()
    fix.setup(type("W", (), {"model": model})())
    assert torch.equal(model["rms"].weight, torch.ones(E)) and torch.equal(model["ln"].weight, torch.ones(E))
    assert "reset 2 module(s)" in fix.did[0] and torch.equal(model["lin"].bias, torch.zeros(E))


def test_reinit_constant_finds_a_norm_gain_by_the_names_ports_give_it():
    """A GPT-2 port's Norm (x_hat * g + b) with its initialisers swapped: g = zeros, b = ones, every output the bias.
    Its gain is found as `g` (as `gamma` in a TensorFlow port): set to ones; a zero `b` or a gain of ones is not."""
    from diagnose.engine.interventions.reinit_constant import ReinitConstant, constant_weights

    class Norm(nn.Module):
        def __init__(self, d, gain="g"):
            super().__init__()
            self.gain = gain
            self.register_parameter(gain, nn.Parameter(torch.zeros(d)))
            self.b = nn.Parameter(torch.ones(d))

        def forward(self, x):
            x = (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + 1e-5).sqrt()
            return x * getattr(self, self.gain) + self.b

    model = nn.ModuleDict({"gpt2": Norm(E), "tf": Norm(E, "gamma"), "ok": Norm(E)})
    with torch.no_grad():
        model["ok"].g.fill_(1.0)
    assert [n for n, _ in constant_weights(model)] == ["gpt2.g", "tf.gamma"]
    ReinitConstant().setup(type("W", (), {"model": model})())
    assert torch.equal(model["gpt2"].g, torch.ones(E)) and torch.equal(model["tf"].gamma, torch.ones(E))
    assert torch.equal(model["gpt2"].b, torch.ones(E))  # the bias is left as the script set it


def test_step_cap_closes_the_watch_and_ends_the_script_cleanly(under_ablation, tmp_path):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation(None, steps=3)
    x, t = batch()
    with pytest.raises(SystemExit) as exc:
        with diagnose.watch(model, opt, batch_size=B, name="mine") as w:
            for i in range(10):
                step(model, opt, w, i, x, t)
    assert exc.value.code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["runs"][0]["name"] == "fix:None" and summary["runs"][0]["steps"] == 3
    status = json.loads(open(spec["status"]).read())
    assert status["capped"] and status["observed"] == 3


def test_mask_duplicates_masks_duplicate_columns_not_collapse():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt[3] = txt[1]  # a duplicate caption: column 3 duplicates column 1
    masked, count = mask_duplicate_candidates(10 * img @ txt.t())
    assert count == 2 and math.isinf(masked[1, 3]) and math.isinf(masked[3, 1]) and math.isfinite(masked[1, 1])
    collapsed = torch.ones(6, 6) * 3.0  # every candidate alike: collapse, not duplicates
    assert mask_duplicate_candidates(collapsed)[1] == 0


def test_mask_duplicates_masks_exact_copies_of_a_caption_most_of_the_batch_shares_in_both_directions():
    # a skewed label set: 5 of 8 captions are one class prompt; image->text sees 5 identical columns, text->image
    # (the script's logits.t()) sees 5 identical rows. Near-duplicates that many would read as collapse; exact ones
    # are copies of one input
    g = torch.Generator().manual_seed(2)
    img = F.normalize(torch.randn(8, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(8, 8, generator=g), dim=-1)
    txt[1:5] = txt[0]
    logits = 10 * img @ txt.t()
    i2t, n1 = mask_duplicate_candidates(logits)
    t2i, n2 = mask_duplicate_candidates(logits.t())
    assert n1 == n2 == 20  # 5 rows x 4 copies each way
    assert math.isinf(i2t[0, 3]) and math.isinf(t2i[0, 3]) and math.isfinite(i2t[0, 0]) and math.isfinite(i2t[0, 6])
    assert torch.isfinite(i2t[5:]).all()  # the rows of distinct captions keep every candidate


def test_mask_duplicates_masks_copies_of_the_positive_in_gathered_logits_only():
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    other = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    target = torch.arange(4) + 4  # this rank's block is the second of three
    gathered = 10 * img @ torch.cat([txt, txt, other]).t()  # rank 0 drew the same batch as this rank
    masked, count = mask_twin_candidates(gathered, target)
    assert count == 4 and all(math.isinf(masked[i, i]) and math.isfinite(masked[i, i + 4]) for i in range(4))
    assert torch.isfinite(masked[:, 8:]).all()  # the third rank's distinct captions stay negatives
    # near miss: every rank its own captions
    assert mask_twin_candidates(10 * img @ torch.cat([txt, other, -other]).t(), target)[1] == 0


def test_centre_inputs_removes_a_shared_component(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("centre_inputs")
    x, t = batch()
    seen = []
    model.image.register_forward_pre_hook(lambda m, a: seen.append(a[0].mean(0).norm().item()))
    with diagnose.watch(model, opt, batch_size=B) as w:
        step(model, opt, w, 0, x + 50.0, t)
    assert seen[0] < 5.0  # the +50 offset on every input is gone



class PixelTowers(Towers):
    """A Hugging Face-style image entry point: `get_image_features(pixel_values=...)` on (B, C, H, W) pixels."""

    def get_image_features(self, pixel_values):
        return F.normalize(self.image(pixel_values.mean(dim=(2, 3)).repeat(1, DIN // 3)), dim=-1)


def test_centre_inputs_centres_pixels_per_channel_through_get_image_features(under_ablation):
    torch.manual_seed(0)
    model = PixelTowers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("centre_inputs")
    px, t = 115.0 + torch.randn(B, 3, 4, 4) * torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1), batch()[1]
    seen = []
    model.image.register_forward_pre_hook(lambda m, a: seen.append(a[0].mean(0).abs().max().item()))
    with diagnose.watch(model, opt, batch_size=B) as w:
        img, txt = model.get_image_features(pixel_values=px), F.normalize(model.text(t), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = F.cross_entropy(logits, torch.arange(B))
        loss.backward()
        w.observe(0, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        opt.step()
    assert seen[0] < 5.0  # the mean image (~115 in every channel) is gone
    assert "get_image_features" not in model.__dict__  # the entry point is restored when the watch closes


def test_a_model_saved_whole_under_centre_inputs_leaves_the_wrapped_entry_point_out(under_ablation):
    """`torch.save(model)` inside the loop (a checkpoint routine) while the fix wraps `get_image_features` on the
    instance: saved without the wrapper (a closure), which stays in place for the run."""
    import io

    torch.manual_seed(0)
    model = PixelTowers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("centre_inputs")
    px, t = 115.0 + torch.randn(B, 3, 4, 4), batch()[1]
    with diagnose.watch(model, opt, batch_size=B) as w:
        img, txt = model.get_image_features(pixel_values=px), F.normalize(model.text(t), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = F.cross_entropy(logits, torch.arange(B))
        loss.backward()
        w.observe(0, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        opt.step()
        buf = io.BytesIO()
        torch.save(model, buf)
        assert "get_image_features" in model.__dict__
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    assert "get_image_features" not in loaded.__dict__ and b"diagnose" not in buf.getvalue()


def test_standardise_inputs_takes_the_offset_and_the_scale_per_channel(under_ablation):
    torch.manual_seed(0)
    model = PixelTowers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("standardise_inputs")
    scale = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    px, t = 115.0 + torch.randn(B, 3, 4, 4) * scale, batch()[1]
    seen = []
    model.get_image_features = _spy(model.get_image_features, seen)
    with diagnose.watch(model, opt, batch_size=B) as w:
        img, txt = model.get_image_features(pixel_values=px), F.normalize(model.text(t), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = F.cross_entropy(logits, torch.arange(B))
        loss.backward()
        w.observe(0, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        opt.step()
    got = seen[0]
    assert got.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # centred per channel
    assert torch.allclose(got.transpose(0, 1).reshape(3, -1).std(dim=1), torch.ones(3), atol=1e-4)  # unit spread
    assert "standardise_inputs" in CATALOGUE and for_cause("shared_input_component") == [
        "centre_inputs", "standardise_inputs"]


class ForwardCallsEntry(PixelTowers):
    """Hugging Face's CLIPModel: forward(pixel_values=...) hands the pixels on to its own get_image_features."""

    def forward(self, pixel_values, t):
        return self.get_image_features(pixel_values=pixel_values), F.normalize(self.text(t), dim=-1)


@pytest.mark.parametrize("fix", ["centre_inputs", "standardise_inputs"])
def test_inputs_are_transformed_once_when_forward_calls_its_own_entry_point(under_ablation, fix):
    torch.manual_seed(0)
    model = ForwardCallsEntry()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation(fix)
    px, t = 115.0 + torch.randn(B, 3, 4, 4) * 10.0, batch()[1]
    seen = []
    model.get_image_features = _spy(model.get_image_features, seen)
    with diagnose.watch(model, opt, batch_size=B) as w:
        img, txt = model(pixel_values=px, t=t)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = F.cross_entropy(logits, torch.arange(B))
        loss.backward()
        w.observe(0, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        opt.step()
    assert seen[0].mean().abs() < 1e-4  # centred once (twice would leave -115)


def _spy(fn, seen):
    def wrapped(pixel_values):
        seen.append(pixel_values.detach().clone())
        return fn(pixel_values=pixel_values)
    return wrapped


def test_clip_grad_clips_before_the_step(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    under_ablation("clip_grad", max_norm=1e-3)
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        step(model, opt, w, 0, x, t)
        moved = torch.cat([p.detach().flatten() for p in model.parameters()]) - flat
    assert float(moved.norm()) == pytest.approx(1e-3, rel=1e-3)


def test_lr_up_measures_its_factor_on_the_first_step(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.Adam(model.parameters(), lr=1e-7)  # 10^4 below a healthy Adam lr
    under_ablation("lr_up")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        step(model, opt, w, 0, x, t)
        fix = w.control.fix
        assert fix._factor == pytest.approx(1e4)  # capped; not a x10 that leaves the lr 10^3 too low
        before = model.image.weight.detach().clone()
        step(model, opt, w, 1, x, t)
        moved = (model.image.weight.detach() - before).abs().max().item()
    assert moved == pytest.approx(1e-7 * fix._factor, rel=0.05)  # Adam: every element moves by ~lr


def test_lr_down_lowers_again_after_a_step_that_still_rewrites_the_model(under_ablation):
    """Adam at lr 5: at x0.1 every element still moves by 0.5 on weights of rms ~0.3, a step over 0.1 of the model's
    norm; the fix takes that step again lower (Adam's step is linear in the lr) and keeps the lower lr. At a usual lr
    it stays the plain x0.1."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.Adam(model.parameters(), lr=5.0)
    under_ablation("lr_down")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        before = model.image.weight.detach().clone()
        step(model, opt, w, 0, x, t)
        fix = w.control.fix
        # the step taken again at the lr that moves the model by at most 0.1 of its norm: x0.01 or lower
        assert fix._factor <= 0.01 and "optimizer step 1 at x0.1" in fix.did[-1] and "taken again" in fix.did[-1]
        first = (model.image.weight.detach() - before).abs().max().item()
        assert first == pytest.approx(5.0 * fix._factor, rel=0.05)  # Adam: every element moves by ~lr
        before = model.image.weight.detach().clone()
        step(model, opt, w, 1, x, t)
        assert (model.image.weight.detach() - before).abs().max().item() < 5.0 * fix._factor * 1.2
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(3):
            step(model, opt, w, i, x, t)
        assert w.control.fix._factor == pytest.approx(0.1)


def test_lr_down_brings_a_first_step_above_a_healthy_peak_to_it(under_ablation):
    """Adam at lr 0.2 (an SGD-sized lr): at x0.1 the first step still moves the model by several times 1e-2 of its
    norm (where healthy runs peak) without rewriting it (< 0.1): the step is taken again at the factor that brings it
    to 1e-2, and that factor stays."""
    from diagnose.engine.interventions.lr import HEALTHY_PEAK_RATIO, update_ratio

    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.Adam(model.parameters(), lr=0.2)
    under_ablation("lr_down")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        before = [p.detach().clone() for p in model.parameters()]
        step(model, opt, w, 0, x, t)
        fix = w.control.fix
        assert 1e-3 < fix._factor < 0.1 and "more than 0.01 of its norm" in fix.did[-1]
        assert update_ratio([p.detach() for p in model.parameters()], before) == pytest.approx(HEALTHY_PEAK_RATIO,
                                                                                              rel=1e-3)
        step(model, opt, w, 1, x, t)
        assert w.control.fix._factor == fix._factor


def test_docs_list_every_fix_as_the_catalogue_declares_it():
    from pathlib import Path

    from diagnose.engine.interventions import markdown_table

    doc = (Path(__file__).resolve().parents[2] / "docs" / "ablate.md").read_text()
    assert markdown_table() in doc, "docs/ablate.md: paste diagnose.engine.interventions.markdown_table()"


def test_fp32_master_weights_keeps_an_fp16_adam_step_finite(under_ablation):
    torch.manual_seed(0)
    model = Towers().half()
    model.text.weight.requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8)
    under_ablation("fp32_master_weights")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(2):
            img, txt = model(x.half(), t.half())
            loss = (img.float() * txt.float()).sum() * 0.0  # every gradient exactly 0: fp16 eps gives 0/0
            opt.zero_grad()
            loss.backward()
            w.observe(i, losses={"clip": loss})
            opt.step()
    assert all(torch.isfinite(p).all() and p.dtype == torch.float16 for p in model.parameters())


def test_grad_through_no_grad_trains_a_tower_called_under_no_grad(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD([*model.image.parameters(), model.logit_scale], lr=0.1)  # text left out, as in the bug
    under_ablation("grad_through_no_grad")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        before = model.text.weight.detach().clone()
        for i in range(2):
            img = F.normalize(model.image(x), dim=-1)
            with torch.no_grad():
                txt = F.normalize(model.text(t), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = F.cross_entropy(logits, torch.arange(B))
            opt.zero_grad()
            loss.backward()
            w.observe(i, losses={"clip": loss})
            opt.step()
        assert not torch.equal(before, model.text.weight.detach())
        model.eval()
        with torch.no_grad():
            assert not torch.is_grad_enabled()  # evaluation keeps its no_grad
    with torch.no_grad():  # and the patch is gone once the watch closed
        assert not torch.is_grad_enabled()


def test_grad_through_no_grad_undoes_a_detach_of_the_logits_only(under_ablation):
    """`scale * (img @ txt.t()).detach()`: the towers get gradients again; the script's `.numpy()` of the logits
    still works; a detach of the text features (the locked side, as meant) stays."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("grad_through_no_grad")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(2):
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * (img @ txt.detach().t()).detach()
            assert logits.detach().numpy().shape == (B, B)
            loss = F.cross_entropy(logits, torch.arange(B))
            opt.zero_grad()
            loss.backward()
            assert model.image.weight.grad is not None and model.image.weight.grad.abs().sum() > 0
            assert model.text.weight.grad is None
            w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()
    assert not torch.randn(B, B, requires_grad=True).detach().requires_grad  # undone on close
    assert "4 .detach() of the logits undone" in json.loads(open(spec["status"]).read())["applied"][0]


def test_local_grad_in_gather_puts_the_local_shard_back(under_ablation, tmp_path):
    import torch.distributed as dist

    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("local_grad_in_gather")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rdv", rank=0, world_size=1)
    try:
        x, t = batch()
        with diagnose.watch(model, opt, batch_size=B) as w:
            img, txt = model(x, t)
            out = [torch.empty_like(img)]
            dist.all_gather(out, img)  # without the fix: no autograd history
            logits = model.logit_scale.exp() * out[0] @ txt.t()
            loss = F.cross_entropy(logits, torch.arange(B))
            opt.zero_grad()
            loss.backward()
            w.observe(0, losses={"clip": loss})
            assert model.image.weight.grad is not None and float(model.image.weight.grad.abs().sum()) > 0
    finally:
        dist.destroy_process_group()


def test_gather_with_grad_is_not_applicable_without_a_process_group(under_ablation):
    # its effect on 2 ranks: tests/distributed/test_rules_distributed.py::test_gather_with_grad_gives_a_local_loss_...
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("gather_with_grad")
    x, t = batch()
    with pytest.raises(SystemExit) as exc:  # the run stops at the first observe
        with diagnose.watch(model, opt, batch_size=B) as w:
            for i in range(2):
                step(model, opt, w, i, x, t)
    assert exc.value.code == 0
    assert "no torch.distributed process group" in json.loads(open(spec["status"]).read())["not_applicable"]


def _train_with_hand_decay(model, opt, w, steps: int, decay: float) -> None:
    x, t = batch()
    for i in range(steps):
        step(model, opt, w, i, x, t)
        with torch.no_grad():
            model.image.weight.mul_(1 - decay)  # decoupled decay written by hand, outside optimizer.step()


def test_undo_outside_updates_restores_a_hand_written_decay(under_ablation):
    torch.manual_seed(0)
    reference = Towers()
    model = Towers()
    model.load_state_dict(reference.state_dict())
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    x, t = batch()
    for i in range(4):  # the same steps with no decay at all
        img, txt = reference(x, t)
        logits = reference.logit_scale.exp() * img @ txt.t()
        labels = torch.arange(B)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("undo_outside_updates")
    with diagnose.watch(model, opt, batch_size=B) as w:
        _train_with_hand_decay(model, opt, w, 4, decay=0.5)
        model(x, t)  # the next forward undoes the last step's decay too
    assert torch.allclose(model.image.weight, reference.image.weight, atol=1e-6)
    status = json.loads(open(spec["status"]).read())
    assert status["not_applicable"] is None
    applied = status["applied"][0]
    assert "4 outside write(s) undone on 1 of 5" in applied and "image.weight (0.5)" in applied


def test_undo_outside_updates_without_the_fix_the_decay_stays(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    norm0 = float(model.image.weight.detach().norm())
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    under_ablation(None)
    with diagnose.watch(model, opt, batch_size=B) as w:
        _train_with_hand_decay(model, opt, w, 4, decay=0.5)
    assert float(model.image.weight.detach().norm()) == pytest.approx(norm0 / 16, rel=0.01)  # what the fix undoes


def test_undo_outside_updates_is_not_applicable_when_only_the_optimizer_writes(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("undo_outside_updates")
    x, t = batch()
    with pytest.raises(SystemExit) as exc:
        with diagnose.watch(model, opt, batch_size=B) as w:
            for i in range(40):
                step(model, opt, w, i, x, t)
    assert exc.value.code == 0
    status = json.loads(open(spec["status"]).read())
    assert status["observed"] == 30  # stopped at the observe after the `after`=30th step
    # checked before the forwards of steps 1-30 and before the optimizer steps 1-29
    assert "no parameter changed outside optimizer.step() in 30 steps (59 checks" in status["not_applicable"]


def test_a_fix_that_answers_a_finding_of_the_cause_is_tried_first():
    from diagnose.engine.interventions import for_cause
    plain = for_cause("learning_rate_too_low")
    assert plain[0] != "undo_outside_updates" and "undo_outside_updates" in plain
    ordered = for_cause("learning_rate_too_low", ["loss_at_chance", "steps_undone_outside"])
    assert ordered[0] == "undo_outside_updates" and sorted(ordered) == sorted(plain)
    assert for_cause("param_not_in_optimizer", ["forward_weights_stale"])[0] == "clear_autocast_cache"


class HalfOutputs(nn.Module):
    """A half-precision model returning its embeddings in a dict, a tuple and a transformers-style ModelOutput."""

    def __init__(self):
        super().__init__()
        self.towers = Towers().half()

    def forward(self, x, t):
        from transformers.utils import ModelOutput

        img, txt = self.towers(x.half(), t.half())
        return {"pair": (img, txt), "ids": torch.arange(len(x)), "out": ModelOutput(image_embeds=img)}

    def encode_image(self, x):
        return self.towers.image(x.half())


def test_fp32_outputs_casts_half_outputs_and_keeps_an_exp_loss_finite(under_ablation):
    torch.manual_seed(0)
    x, t = batch()
    t = x.clone()  # matching pairs: cosines near 1 once scaled by 1/0.07 overflow exp() in fp16
    model = HalfOutputs()
    model.towers.text.load_state_dict(model.towers.image.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    img, txt = model(x, t)["pair"]
    assert torch.isinf(torch.exp((img @ txt.t()) / 0.07)).any()  # without the fix: inf in fp16
    spec = under_ablation("fp32_outputs")
    with diagnose.watch(model, opt, batch_size=B) as w:
        out = model(x, t)
        img, txt = out["pair"]
        assert img.dtype == txt.dtype == out["out"].image_embeds.dtype == torch.float32
        assert out["out"]["image_embeds"].dtype == torch.float32
        assert out["ids"].dtype == torch.int64
        loss = -torch.log_softmax(torch.log(torch.exp((img @ txt.t()) / 0.07)), dim=1).diagonal().mean()
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        w.observe(0, losses={"infonce": loss})
        opt.step()
        assert model.towers.image.weight.grad.dtype == torch.float16  # the model keeps its precision
        assert torch.isfinite(model.towers.image.weight.grad).all()
        assert model.encode_image(x).dtype == torch.float32  # the entry point scripts call instead of forward
    assert model.encode_image(x).dtype == torch.float16 and "encode_image" not in model.__dict__  # undone on close
    status = json.loads(open(spec["status"]).read())
    assert status["applied"] == ["3 half-precision output tensor(s) cast to float32 over 1 model calls"]


def test_fp32_outputs_is_not_applicable_to_an_fp32_model(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("fp32_outputs")
    x, t = batch()
    with pytest.raises(SystemExit):
        with diagnose.watch(model, opt, batch_size=B) as w:
            step(model, opt, w, 0, x, t)
    status = json.loads(open(spec["status"]).read())
    assert "already fp32 (float32 in 1 calls) and the script computes no half" in status["not_applicable"]


def test_fp32_outputs_casts_logits_the_script_computes_in_half(under_ablation):
    """An fp32 model whose logits the loss line computes in half (`scale.half() * (img.half() @ txt.half().t())`):
    the half logits are cast to float32 where they are made; the model's own half layers are left alone."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("fp32_outputs")
    x, t = batch()
    dtypes = []
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(2):
            img, txt = model(x, t)
            sim = model.logit_scale.exp().half() * (img.half() @ txt.half().t())
            dtypes.append(sim.dtype)
            loss = F.cross_entropy(sim.float(), torch.arange(B))
            opt.zero_grad()
            loss.backward()
            w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=sim)
            opt.step()
    assert dtypes == [torch.float32, torch.float32]
    assert (torch.randn(B, E).half() @ torch.randn(E, B).half()).dtype == torch.float16  # after close: as written
    assert json.loads(open(spec["status"]).read())["applied"] == [
        "2 half-precision logits computed by the script cast to float32"]


class MeanPooled(nn.Module):
    """A masked mean pooling in the model's forward: a row with no token is 0/0."""

    def __init__(self):
        super().__init__()
        self.towers = Towers()
        self.logit_scale = self.towers.logit_scale

    def forward(self, x, tokens, mask):
        pooled = (tokens * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return F.normalize(self.towers.image(x), dim=-1), F.normalize(self.towers.text(pooled), dim=-1)


def test_guard_zero_division_turns_an_empty_mean_pool_into_zeros(under_ablation):
    torch.manual_seed(0)
    model = MeanPooled()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, _ = batch()
    tokens, mask = torch.randn(B, 5, DIN), torch.ones(B, 5)
    mask[3] = 0  # an empty caption
    img, txt = model(x, tokens, mask)
    assert torch.isnan(txt[3]).all()  # without the fix
    spec = under_ablation("guard_zero_division")
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(2):
            img, txt = model(x, tokens, mask)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = F.cross_entropy(logits, torch.arange(B))
            assert torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()
    assert torch.isnan(torch.zeros(2) / torch.zeros(2)).all()  # undone on close
    assert json.loads(open(spec["status"]).read())["applied"] == [
        "2 division(s) by a tensor with zeros divided by 1 at 2 entries"]


def test_guard_zero_division_gives_a_float16_normalize_an_eps_that_exists_in_its_dtype(under_ablation):
    """F.normalize's default eps (1e-12) is 0 in float16: an all-zero row is 0/0 = NaN (pytorch#32137); under the fix
    it normalises to zeros, and rows that are not zero are unchanged. A float32 normalize is left alone."""
    rows = torch.randn(4, 8).half()
    rows[2] = 0
    assert torch.isnan(F.normalize(rows, dim=-1)[2]).all()  # without the fix
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("guard_zero_division")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        out = F.normalize(rows, dim=-1)
        same32 = F.normalize(rows.float(), dim=-1)
        step(model, opt, w, 0, x, t)
        step(model, opt, w, 1, x, t)
    assert torch.equal(out[2], torch.zeros(8, dtype=torch.float16))
    assert torch.allclose(out[[0, 1, 3]].float(), same32[[0, 1, 3]], atol=1e-3)
    assert torch.equal(same32[2], torch.zeros(8))
    assert "1 F.normalize call(s) with an eps that is 0 in their dtype clamped at its smallest normal" in json.loads(
        open(spec["status"]).read())["applied"]


@pytest.mark.parametrize("where", ["optimizer", "loss"])
def test_no_weight_decay_zeroes_the_groups_decay_or_a_penalty_written_into_the_loss(under_ablation, where):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5 if where == "optimizer" else 0.0)
    spec = under_ablation("no_weight_decay")
    x, t = batch()
    before = model.image.weight.detach().clone()
    with diagnose.watch(model, opt, batch_size=B) as w:
        img, txt = model(x, t)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = F.cross_entropy(logits, torch.arange(B))
        if where == "loss":
            loss = loss + 10.0 * sum(p.pow(2).sum() for n, p in model.named_parameters() if n.endswith("weight"))
        opt.zero_grad()
        loss.backward()
        grad = model.image.weight.grad.clone()
        w.observe(0, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        opt.step()
    assert opt.param_groups[0]["weight_decay"] == (0.5 if where == "optimizer" else 0.0)  # given back
    assert torch.allclose(model.image.weight.detach(), before - 0.1 * grad)  # the step had no decay in it
    applied = json.loads(open(spec["status"]).read())["applied"]
    assert applied == (["weight decay [0.5] -> 0 in every group"] if where == "optimizer"
                       else ["2 penalty term(s) on the weights in the loss taken as 0"])
    assert torch.randn(3, requires_grad=True).pow(2).sum() > 0  # undone on close


class MhaPool(nn.Module):
    """Latent attention pooling over (B, T, D) tokens with as many latents as tokens (no shape error)."""

    def __init__(self, batch_first: bool, tokens: int = 4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(tokens, E))
        self.attn = nn.MultiheadAttention(E, 2, batch_first=batch_first)
        self.text = nn.Linear(DIN, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, t):
        q = self.latents.unsqueeze(0).expand(len(tokens), -1, -1)
        img = self.attn(q, tokens, tokens)[0].mean(1)
        return F.normalize(img, dim=-1), F.normalize(self.text(t), dim=-1)


@pytest.mark.parametrize("declared", [True, False])
def test_attention_batch_first_switches_the_module_fed_the_batch_on_dim_0(under_ablation, declared):
    torch.manual_seed(0)
    model = MhaPool(batch_first=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("attention_batch_first")
    g = torch.Generator().manual_seed(0)
    tokens, t = torch.randn(B, 4, E, generator=g), torch.randn(B, DIN, generator=g)
    with diagnose.watch(model, opt, batch_size=B if declared else None) as w:
        for i in range(3):
            step(model, opt, w, i, tokens, t)
        fix = w.control.fix
    assert model.attn.batch_first  # the module now attends over each sample's tokens
    assert fix.did == [f"attn: batch_first False -> True (query ({B}, 4, {E}), batch {B})"]
    with torch.no_grad():  # and samples no longer depend on each other
        full = model(tokens, t)[0]
        assert torch.allclose(model(tokens[:5], t[:5])[0], full[:5], atol=1e-6)


def test_attention_batch_first_leaves_a_sequence_first_module_alone(under_ablation, tmp_path):
    torch.manual_seed(0)
    model = MhaPool(batch_first=False)
    model.forward = lambda tokens, t: (  # fed (T, B, D), as the module expects
        F.normalize(model.attn(model.latents.unsqueeze(1).expand(-1, len(t), -1), tokens.transpose(0, 1),
                               tokens.transpose(0, 1))[0].mean(0), dim=-1), F.normalize(model.text(t), dim=-1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("attention_batch_first")
    x = torch.randn(B, 4, E)
    with pytest.raises(SystemExit):
        with diagnose.watch(model, opt, batch_size=B) as w:
            for i in range(3):
                step(model, opt, w, i, x, torch.randn(B, DIN))
    assert not model.attn.batch_first
    assert "every nn.MultiheadAttention (and recurrent layer) was fed the layout" in \
        json.loads(open(spec["status"]).read())["not_applicable"]


class LstmPool(nn.Module):
    """Tokens through an nn.LSTM built without batch_first, fed (B, T, D), its state at the last position read as
    `out[:, -1]`: each sample's "last step" is the batch's last sample."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(E, E)
        self.text = nn.Linear(DIN, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, t):
        return F.normalize(self.lstm(tokens)[0][:, -1], dim=-1), F.normalize(self.text(t), dim=-1)


def test_attention_batch_first_switches_a_recurrent_layer_fed_the_batch_on_dim_0(under_ablation):
    torch.manual_seed(0)
    model = LstmPool()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("attention_batch_first")
    g = torch.Generator().manual_seed(0)
    tokens, t = torch.randn(B, 4, E, generator=g), torch.randn(B, DIN, generator=g)
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(3):
            step(model, opt, w, i, tokens, t)
        fix = w.control.fix
    assert model.lstm.batch_first and fix.did == [f"lstm: batch_first False -> True (query ({B}, 4, {E}), batch {B})"]
    with torch.no_grad():  # each sample's own last step now, independent of the rest of the batch
        assert torch.allclose(model(tokens[:5], t[:5])[0], model(tokens, t)[0][:5], atol=1e-6)


def test_attention_batch_first_gives_a_batch_first_module_fed_seq_first_its_layout(under_ablation):
    # a batch-first encoder called through a leftover transpose: (T, B, D) read as T samples of length B
    torch.manual_seed(0)
    model = MhaPool(batch_first=True)
    model.forward = lambda tokens, t: (
        F.normalize(model.attn(*(x.transpose(0, 1) for x in (model.latents.unsqueeze(0).expand(len(t), -1, -1),
                                                               tokens, tokens)))[0].mean(0), dim=-1),
        F.normalize(model.text(t), dim=-1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("attention_batch_first")
    g = torch.Generator().manual_seed(0)
    tokens, t = torch.randn(B, 4, E, generator=g), torch.randn(B, DIN, generator=g)
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(3):
            step(model, opt, w, i, tokens, t)
        fix = w.control.fix
    assert not model.attn.batch_first
    assert fix.did == [f"attn: batch_first True -> False (query ({model.latents.shape[0]}, {B}, {E}), batch {B})"]
    with torch.no_grad():  # samples no longer depend on each other
        full = model(tokens, t)[0]
        assert torch.allclose(model(tokens[:5], t[:5])[0], full[:5], atol=1e-6)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_fix_closes_cleanly_after_its_setup_found_it_not_applicable(name):
    # a plain MLP: most fixes find nothing to change; the ablation still closes each one (and its hooks)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fix = make(name)
    with diagnose.watch(model, opt, out=None, batch_size=4) as w:
        try:
            fix.setup(w)
        except NotApplicable:
            pass
        fix.close()


class _Tower(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(DIN, E)

    def forward(self, pixel_values):
        return self.proj(pixel_values)


class TowerCalledDirectly(nn.Module):
    """Hugging Face's CLIPModel used tower by tower: the script calls model.vision_model(pixel_values=...) itself."""

    def __init__(self):
        super().__init__()
        self.vision_model, self.text = _Tower(), nn.Linear(DIN, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, pixel_values, t):
        return F.normalize(self.vision_model(pixel_values=pixel_values), dim=-1), F.normalize(self.text(t), dim=-1)


@pytest.mark.parametrize("through_forward", [False, True])
def test_centre_inputs_reaches_an_image_tower_the_script_calls_itself(under_ablation, through_forward):
    torch.manual_seed(0)
    model = TowerCalledDirectly()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    under_ablation("centre_inputs")
    x, t = batch()
    x = x + 50.0
    seen = []
    model.vision_model.proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].mean(0).abs().max().item()))
    with diagnose.watch(model, opt, batch_size=B) as w:
        if through_forward:
            img, txt = model(x, t)
        else:
            img = F.normalize(model.vision_model(pixel_values=x), dim=-1)
            txt = F.normalize(model.text(t), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = F.cross_entropy(logits, torch.arange(B))
        loss.backward()
        w.observe(0, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        opt.step()
    assert len(seen) == 1 and seen[0] < 1e-4  # centred once (by the first batch's own mean), not twice


def test_eps_default_steps_adam_at_its_default_eps_and_gives_the_users_back(under_ablation):
    """Adam(eps=1.0) on gradients of ~1e-2: the step is lr * m / (sqrt(v) + eps); under the fix eps is 1e-8 for the
    step (Adam's first step is then lr * sign(g)) and the user's 1.0 is back after it. Default eps: not applicable."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1.0)
    spec = under_ablation("eps_default")
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        before = model.image.weight.detach().clone()
        step(model, opt, w, 0, x, t)
        grad = model.image.weight.grad.clone()
        moved = model.image.weight.detach() - before
        assert torch.allclose(moved, -1e-3 * grad / (grad.abs() + 1e-8), atol=1e-6)
        assert opt.param_groups[0]["eps"] == 1.0
    assert "eps [1.0] -> 1e-08 in 1 of 1 param group(s)" in json.loads(open(spec["status"]).read())["applied"][0]
    spec = under_ablation("eps_default")
    with pytest.raises(SystemExit):
        with diagnose.watch(model, torch.optim.Adam(model.parameters(), lr=1e-3), batch_size=B):
            pass
    assert "no param group has an eps above 1e-08" in json.loads(open(spec["status"]).read())["not_applicable"]


@pytest.mark.parametrize("how", ["masked_fill", "where", "setitem", None])
def test_finite_masks_keeps_an_inf_mask_out_of_the_scales_derivative(under_ablation, how):
    """Duplicates masked with -inf before the learned scale multiplies the logits: d loss / d scale meets 0 x -inf =
    NaN. Under the fix the fill is -sqrt(float32 max): the scale's gradient is finite, the masked entries still get
    probability 0; with no inf fill in the run: not applicable."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("finite_masks")
    x, t = batch()
    dup = torch.zeros(B, B, dtype=torch.bool)
    dup[0, 1] = dup[1, 0] = True

    def masked(sim):
        if how == "masked_fill":
            return sim.masked_fill(dup, float("-inf"))
        if how == "where":
            return torch.where(dup, float("-inf"), sim)
        if how == "setitem":
            sim = sim.clone()
            sim[dup] = float("-inf")
        return sim

    def run(w):
        for i in range(2):
            img, txt = model(x, t)
            logits = masked(img @ txt.t()) * model.logit_scale.exp()
            loss = F.cross_entropy(logits, torch.arange(B))
            opt.zero_grad()
            loss.backward()
            assert torch.isfinite(model.logit_scale.grad)
            assert how is None or torch.softmax(logits, dim=1)[0, 1] == 0
            w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()

    if how is None:
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                run(w)
        assert "wrote no inf as a mask" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    with diagnose.watch(model, opt, batch_size=B) as w:
        run(w)
    assert "2 inf mask fill(s)" in json.loads(open(spec["status"]).read())["applied"][0]
    img, txt = model(x, t)  # the watch closed: the script's own -inf again, and its NaN gradient
    logits = masked(img @ txt.t()) * model.logit_scale.exp()
    F.cross_entropy(logits, torch.arange(B)).backward()
    assert torch.isnan(model.logit_scale.grad)


def test_reinit_nonfinite_redraws_what_was_left_uninitialised_and_says_when_all_is_finite(under_ablation, tmp_path):
    torch.manual_seed(0)
    model = Towers()
    model.latents = nn.Parameter(torch.full((4, E), float("nan")))  # a bare parameter never initialised
    with torch.no_grad():
        model.image.weight.fill_(float("nan"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("reinit_nonfinite")
    text_before = model.text.weight.detach().clone()
    with diagnose.watch(model, opt, batch_size=B):
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
        assert torch.equal(model.text.weight, text_before)  # the finite ones are left as they were
        assert float(model.latents.abs().sum()) > 0 and float(model.image.weight.std()) > 0
    applied = json.loads(open(spec["status"]).read())["applied"][0]
    assert "reset 1 module(s)" in applied and "image.weight" in applied and "redrew 1 tensor(s)" in applied
    torch.manual_seed(0)
    fine = Towers()
    spec = under_ablation("reinit_nonfinite")
    with pytest.raises(SystemExit):
        diagnose.watch(fine, torch.optim.SGD(fine.parameters(), lr=0.1), batch_size=B)
    assert "every parameter is finite" in json.loads(open(spec["status"]).read())["not_applicable"]


@pytest.mark.parametrize("shuffled", [False, True])
def test_shuffle_data_reads_a_loader_in_order_shuffled_and_leaves_a_shuffling_one_alone(under_ablation, shuffled):
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset

    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("shuffle_data")
    x, t = batch()
    data = TensorDataset(torch.arange(4 * B))
    loader = DataLoader(data, batch_size=B, shuffle=shuffled, generator=torch.Generator().manual_seed(1))
    order = []
    orig = DataLoader.__iter__

    def run(w):
        i = 0
        for _ in range(2):  # two passes: a new order each
            for (idx,) in loader:
                order.append(idx.tolist())
                step(model, opt, w, i, x, t)
                i += 1

    if shuffled:  # nothing read in order: the fix says so at the second observe instead of running as a no-op
        with pytest.raises(SystemExit):
            with diagnose.watch(model, opt, batch_size=B) as w:
                run(w)
        assert "SequentialSampler" in json.loads(open(spec["status"]).read())["not_applicable"]
        return
    with diagnose.watch(model, opt, batch_size=B) as w:
        run(w)
    flat = [i for b in order for i in b]
    first, second = flat[:4 * B], flat[4 * B:]
    assert sorted(first) == sorted(second) == list(range(4 * B))  # every sample once a pass
    assert first != list(range(4 * B)) and first != second  # shuffled, anew each pass
    assert isinstance(loader.batch_sampler.sampler, RandomSampler) and loader.batch_sampler.sampler.generator is \
        loader.generator
    assert DataLoader.__iter__ is orig  # the patch undone at close
    status = json.loads(open(spec["status"]).read())
    assert status["not_applicable"] is None and "read in order now reads them shuffled" in status["applied"][0]


def test_step_schedule_makes_a_step_with_the_epoch_advance_the_schedule_by_one(under_ablation):
    # a per-iteration OneCycleLR stepped with the epoch after every batch sits at iteration `epoch` (the start of its
    # warm-up) for the whole epoch; under the fix each of the script's calls advances it by one
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=20)
    inner = torch.optim.lr_scheduler.ExponentialLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 0.5)
    spec = under_ablation("step_schedule")
    x, t = batch()
    lrs = []
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in range(6):
            step(model, opt, w, i, x, t)
            sched.step(i // 3)  # epoch 0 for three batches, then epoch 1
            lrs.append(sched.get_last_lr()[0])
        inner.step(5)  # a scheduler of another optimizer keeps its epoch argument
    ref = torch.optim.lr_scheduler.OneCycleLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), max_lr=1.0,
                                              total_steps=20)
    want = []
    for _ in range(6):
        ref.optimizer.step()
        ref.step()
        want.append(ref.get_last_lr()[0])
    assert sched.last_epoch == 6 and lrs == pytest.approx(want) and max(lrs) > 0.9  # its warm-up walked, as planned
    assert inner.last_epoch == 5
    assert "step" not in type(sched).__dict__  # the class's own step is back at close
    applied = json.loads(open(spec["status"]).read())["applied"][0]
    assert "6 step(epoch) call(s) of the script advanced it by one instead" in applied


def _partition_loss(img, txt, tau=0.01):
    """-log(exp(s_ii / tau) / sum_j exp(s_ij / tau)) written from the formula, plus the image-image similarities."""
    pos = torch.exp((img * txt).sum(-1) / tau)
    others = 1.0 - torch.eye(len(img), dtype=img.dtype)  # an image's similarity with itself left out
    part = torch.exp(img @ txt.t() / tau).sum(-1) + (torch.exp(img @ img.t() / tau) * others).sum(-1)
    return -torch.log(pos / part).mean()


def test_wide_exp_computes_an_overflowing_exp_in_float64_and_leaves_the_others(under_ablation):
    """At tau = 0.01 a cosine above 0.887 overflows float32's exp: the loss is inf without the fix, finite with it
    (the same value float64 gives), and the gradient reaches the weights finite; an exp that fits is left as it was."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, t = batch()
    x[1] = x[0]  # two identical images: cosine 1, exp(100) in the partition function
    img, txt = model(x, t)
    assert not torch.isfinite(_partition_loss(img, txt))  # without the fix
    want = float(_partition_loss(img.double(), txt.double()).detach())
    spec = under_ablation("wide_exp")
    with diagnose.watch(model, opt, batch_size=B) as w:
        small = torch.exp(torch.tensor([1.0, 2.0]))
        for i in range(2):
            img, txt = model(x, t)
            loss = _partition_loss(img, txt)
            if i == 0:
                assert loss.dtype == torch.float64 and float(loss) == pytest.approx(want, rel=1e-6)
            opt.zero_grad()
            loss.backward()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
            w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt})
            opt.step()
    assert small.dtype == torch.float32
    assert torch.isinf(torch.exp(torch.tensor([100.0])))  # undone on close
    status = json.loads(open(spec["status"]).read())
    said = status["applied"][0]  # the image-image partition at least, on each of the two steps
    assert int(said.split()[0]) >= 2
    assert "exp call(s) that overflow or underflow their dtype computed in float64" in said


class QueriesViewed(nn.Module):
    """K queries over (B, T, DIN) tokens through a sequence-first attention, the (K, B, DIN) output read as
    (B, K, DIN) with .view (the DETR line) and mean-pooled; a text tower beside it."""

    def __init__(self, k: int = 4):
        super().__init__()
        self.query = nn.Parameter(torch.randn(k, 1, DIN))
        self.attn = nn.MultiheadAttention(DIN, 2)
        self.text = nn.Linear(DIN, E)
        self.proj = nn.Linear(DIN, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x, t):
        out, _ = self.attn(self.query.expand(-1, x.shape[0], -1), x.transpose(0, 1), x.transpose(0, 1))
        return F.normalize(self.proj(out.view(x.shape[0], -1, DIN).mean(1)), dim=-1), F.normalize(self.text(t), dim=-1)


def test_batch_first_view_reads_each_sample_s_own_rows(under_ablation):
    torch.manual_seed(0)
    model = QueriesViewed()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, t = torch.randn(B, 5, DIN), torch.randn(B, DIN)
    with torch.no_grad():  # the transpose the script meant: row b from sample b's queries only
        out, _ = model.attn(model.query.expand(-1, B, -1), x.transpose(0, 1), x.transpose(0, 1))
        meant = F.normalize(model.proj(out.transpose(0, 1).mean(1)), dim=-1)
        viewed = model(x, t)[0]
    assert not torch.allclose(viewed, meant, atol=1e-4)
    spec = under_ablation("batch_first_view")
    with diagnose.watch(model, opt, batch_size=B) as w:
        with torch.no_grad():
            assert torch.allclose(model(x, t)[0], meant, atol=1e-5)
            kept = torch.arange(24).view(2, 12)  # no batch-sized axis: left alone
        for i in range(2):
            step(model, opt, w, i, x, t)
    assert torch.equal(kept, torch.arange(24).reshape(2, 12))
    said = json.loads(open(spec["status"]).read())["applied"][0]
    assert f"moved the batch axis first before reading ((4, {B}, {DIN}) -> ({B}, -1, {DIN}))" in said


def test_batch_first_view_is_not_applicable_without_such_a_view(under_ablation):
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = under_ablation("batch_first_view")
    x, t = batch()
    with pytest.raises(SystemExit):
        with diagnose.watch(model, opt, batch_size=B) as w:
            for i in range(4):
                step(model, opt, w, i, x, t)
    assert "no view or reshape put the batch size first" in json.loads(open(spec["status"]).read())["not_applicable"]


def test_scale_gathered_grad_multiplies_the_gradients_by_candidates_over_batch(under_ablation):
    """8 rows per rank, 32 candidates (4 ranks' shards): every gradient the optimizer applies is 4x the backward's."""
    torch.manual_seed(0)
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, t = batch()
    spec = under_ablation("scale_gathered_grad")
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(model.image.weight.grad.clone()))
    with diagnose.watch(model, opt, batch_size=B // 2) as w:
        for i in range(2):
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = F.cross_entropy(logits, torch.arange(B))
            opt.zero_grad()
            loss.backward()
            before = model.image.weight.grad.clone()
            w.observe(i, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      candidates=2 * B)
            opt.step()
            assert torch.allclose(model.image.weight.grad, 4 * before)
    assert json.loads(open(spec["status"]).read())["applied"] == [
        "gradients multiplied by 4 (candidates 32 / batch 8) before 2 optimizer step(s)"]
