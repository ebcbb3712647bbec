"""Direct readings of the state the user hands over: the optimizer (probes.optimizer) and the
contrastive step's logits, targets and embeddings (probes.contrastive), against plain computations."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probes import attach
from probes.contrastive import Contrastive
from probes.optimizer import MAX_NAMED, OptimizerState


def _values(df, probe, step=0):
    sub = df[(df.probe == probe) & (df.step == step)]
    return {(t, m): v for t, m, v in zip(sub.target, sub.metric, sub.value)}


def _towers():
    return nn.ModuleDict({"img": nn.Linear(8, 4), "txt": nn.Linear(6, 4)})


def _step(model, x, t, scale=10.0):
    a, b = F.normalize(model["img"](x), dim=-1), F.normalize(model["txt"](t), dim=-1)
    z = scale * a @ b.t()
    return a, b, z, F.cross_entropy(z, torch.arange(len(z)))


def test_optimizer_reads_lr_now_and_initial_under_a_schedule():
    model = _towers()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    with attach(model, opt, probes=[OptimizerState()], strict=True) as session:
        for step in range(4):
            _, _, _, loss = _step(model, torch.randn(8, 8), torch.randn(8, 6))
            opt.zero_grad()
            loss.backward()
            session.observe(step)
            opt.step()
            sched.step()
    v3 = _values(session.records, "optimizer", step=3)
    assert v3[("group0", "lr")] == pytest.approx(1e-3 * 0.5 ** 3)
    assert v3[("group0", "lr_initial")] == pytest.approx(1e-3)
    assert v3[("group0", "params")] == 4 and v3[("group0", "numel")] == 8 * 4 + 4 + 6 * 4 + 4
    assert v3[("outside", "trainable")] == 0 and v3[("outside", "with_grad")] == 0


def test_optimizer_reads_the_peak_a_cyclic_schedule_keeps_on_itself():
    model = _towers()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=1e-4, max_lr=2e-2, step_size_up=50, cycle_momentum=False)
    assert "max_lr" not in opt.param_groups[0]  # kept as the scheduler's max_lrs, not in the group
    with attach(model, opt, probes=[OptimizerState()], strict=True) as session:
        for step in range(2):
            _, _, _, loss = _step(model, torch.randn(8, 8), torch.randn(8, 6))
            opt.zero_grad()
            loss.backward()
            session.observe(step)
            opt.step()
            sched.step()
    assert _values(session.records, "optimizer", step=0)[("group0", "lr_schedule_peak")] == pytest.approx(2e-2)


@pytest.mark.parametrize("make, key", [
    (lambda ps: torch.optim.Adam(ps, lr=1e-3, eps=0.5), "exp_avg_sq"),
    (lambda ps: torch.optim.AdamW([{"params": ps[:2]}, {"params": ps[2:], "eps": 1e-8}], lr=1e-3), "exp_avg_sq"),
    (lambda ps: torch.optim.RMSprop(ps, lr=1e-3, eps=1e-2), "square_avg"),
    (lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9), None),
])
def test_optimizer_reads_eps_and_the_second_moments_rms_it_divides_by(make, key):
    """adaptive_rms = sqrt(mean of the bias-corrected second moment) per group, as torch keeps it, at the
    observation before the step; SGD keeps none and gets no reading."""
    model = _towers()
    opt = make(list(model.parameters()))
    want = {}
    with attach(model, opt, probes=[OptimizerState()], strict=True) as session:
        for step in range(4):
            _, _, _, loss = _step(model, torch.randn(8, 8), torch.randn(8, 6))
            opt.zero_grad()
            loss.backward()
            session.observe(step)
            if key and step == 3:
                for i, g in enumerate(opt.param_groups):
                    states = [opt.state[p] for p in g["params"]]
                    corr = [1 - g["betas"][1] ** float(st["step"]) if "betas" in g else 1.0 for st in states]
                    total = sum(float(st[key].double().sum()) / c for st, c in zip(states, corr))
                    want[f"group{i}"] = (math.sqrt(total / sum(st[key].numel() for st in states)), g["eps"])
            opt.step()
    v3 = _values(session.records, "optimizer", step=3)
    got = {t: (v3[(t, "adaptive_rms")], v3[(t, "eps")]) for t, m in v3 if m == "adaptive_rms"}
    assert got.keys() == want.keys()
    for t, (rms, eps) in want.items():
        assert got[t][0] == pytest.approx(rms, rel=1e-5) and got[t][1] == eps
    assert not any(m == "adaptive_rms" for (_, m) in _values(session.records, "optimizer", step=0))  # no state yet


def test_optimizer_reads_the_lr_the_watch_opened_with_before_the_loop_sets_it():
    model = _towers()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with attach(model, opt, probes=[OptimizerState()], strict=True) as session:
        for step in range(3):
            opt.param_groups[0]["lr"] = 1e-6 * step  # set by hand every step, before observe
            _, _, _, loss = _step(model, torch.randn(8, 8), torch.randn(8, 6))
            opt.zero_grad()
            loss.backward()
            session.observe(step)
            opt.step()
    v2 = _values(session.records, "optimizer", step=2)
    assert v2[("group0", "lr")] == pytest.approx(2e-6) and v2[("group0", "lr_start")] == pytest.approx(1e-3)
    assert v2[("group0", "lr_initial")] == pytest.approx(0.0)  # no initial_lr: the first lr seen


def test_optimizer_reads_the_step_count_a_resumed_state_holds_when_the_watch_opens():
    model = _towers()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):  # the first launch: three steps, then its state is saved and loaded into a new optimizer
        _, _, _, loss = _step(model, torch.randn(8, 8), torch.randn(8, 6))
        opt.zero_grad()
        loss.backward()
        opt.step()
    resumed = torch.optim.Adam(model.parameters(), lr=1e-4)
    resumed.load_state_dict(opt.state_dict())
    for optimizer, want in ((resumed, 3.0), (torch.optim.Adam(model.parameters(), lr=1e-3), 0.0)):
        with attach(model, optimizer, probes=[OptimizerState()], strict=True) as session:
            for step in range(2):
                _, _, _, loss = _step(model, torch.randn(8, 8), torch.randn(8, 6))
                optimizer.zero_grad()
                loss.backward()
                session.observe(step)
                optimizer.step()
        assert _values(session.records, "optimizer", step=0)[("optimizer", "state_steps_at_start")] == want
        assert ("optimizer", "state_steps_at_start") not in _values(session.records, "optimizer", step=1)


def test_optimizer_names_parameters_with_gradients_outside_every_group():
    model = _towers()
    opt = torch.optim.SGD(model["img"].parameters(), lr=0.1)  # the text tower was left out
    with attach(model, opt, probes=[OptimizerState()], strict=True) as session:
        _, _, _, loss = _step(model, torch.randn(8, 8), torch.randn(8, 6))
        loss.backward()
        session.observe(0)
        opt.step()
    v = _values(session.records, "optimizer")
    assert v[("outside", "trainable")] == 2 and v[("outside", "with_grad")] == 2
    assert v[("outside", "numel_with_grad")] == 6 * 4 + 4
    assert v[("txt.weight", "outside_optimizer_numel")] == 24 and v[("txt.bias", "outside_optimizer_numel")] == 4


def test_optimizer_near_miss_frozen_parameters_are_not_outside():
    model = _towers()
    for p in model["txt"].parameters():
        p.requires_grad_(False)  # frozen on purpose: not a parameter the optimizer forgot
    opt = torch.optim.SGD(model["img"].parameters(), lr=0.1)
    with attach(model, opt, probes=[OptimizerState()], strict=True) as session:
        _, _, _, loss = _step(model, torch.randn(8, 8), torch.randn(8, 6))
        loss.backward()
        session.observe(0)
    v = _values(session.records, "optimizer")
    assert v[("outside", "trainable")] == 0 and v[("outside", "with_grad")] == 0


def test_optimizer_reads_tensors_that_are_not_the_models():
    """An optimizer built on another instance (a model rebuilt after it): its tensors are foreign and get no
    gradient, while every parameter of the watched model is outside; a loss module's temperature is foreign
    and gets one."""
    model, old = _towers(), _towers()
    temperature = nn.Parameter(torch.tensor(10.0))
    opt = torch.optim.SGD([*old.parameters(), temperature], lr=0.1)
    with attach(model, opt, probes=[OptimizerState()], strict=True) as session:
        a, b, _, _ = _step(model, torch.randn(8, 8), torch.randn(8, 6))
        F.cross_entropy(temperature * a @ b.t(), torch.arange(8)).backward()
        session.observe(0)
    v = _values(session.records, "optimizer")
    assert v[("foreign", "tensors")] == 5 and v[("foreign", "with_grad")] == 1
    assert v[("outside", "trainable")] == 4 and v[("outside", "with_grad")] == 4

def test_optimizer_names_at_most_max_named():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(MAX_NAMED)])
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with attach(model, opt, probes=[OptimizerState()], strict=True) as session:
        model(torch.randn(3, 2)).sum().backward()
        session.observe(0)
    v = _values(session.records, "optimizer")
    assert v[("outside", "with_grad")] == 2 * MAX_NAMED
    assert sum(m == "outside_optimizer_numel" for _, m in v) == MAX_NAMED


def test_contrastive_logits_targets_and_norms_match_plain_torch():
    torch.manual_seed(1)
    model = _towers()
    x, t = torch.randn(8, 8), torch.randn(8, 6)
    targets = torch.tensor([0, 0, 0, 3, 4, 5, 6, 7])  # three rows point at column 0
    with attach(model, None, probes=[Contrastive()], strict=True) as session:
        a, b, z, _ = _step(model, x, t)
        raw = model["img"](x)
        session.observe(0, embeddings={"image": raw, "text": b}, logits={"i2t": z}, targets=targets)
    v = _values(session.records, "contrastive")
    diag = torch.arange(8)
    assert v[("logits", "rows")] == 8 and v[("logits", "cols")] == 8
    assert v[("logits", "acc_diagonal")] == pytest.approx(float((z.argmax(1) == diag).float().mean()))
    want = 0.5 * (F.cross_entropy(z, diag) + F.cross_entropy(z.t(), diag))
    assert v[("logits", "loss_diagonal")] == pytest.approx(float(want), rel=1e-5)
    assert v[("logits", "target_on_diagonal")] == pytest.approx(6 / 8)
    assert v[("logits", "targets_distinct")] == pytest.approx(6 / 8)
    assert v[("logits", "loss_target")] == pytest.approx(float(F.cross_entropy(z, targets)), rel=1e-5)
    norms = raw.detach().norm(dim=-1)
    assert v[("image", "norm_cv")] == pytest.approx(float(norms.std() / norms.mean()), rel=1e-4)
    assert v[("text", "norm_cv")] < 1e-5  # unit rows


def test_contrastive_duplicates_and_the_masked_counterfactual():
    torch.manual_seed(2)
    model = _towers()
    x, t = torch.randn(8, 8), torch.randn(8, 6)
    t[1] = t[0]  # two pairs share a caption: each is a false negative of the other
    t[5] = t[4]
    with attach(model, None, probes=[Contrastive()], strict=True) as session:
        a, b, z, _ = _step(model, x, t)
        session.observe(0, embeddings={"image": a, "text": b}, logits={"i2t": z})
    v = _values(session.records, "contrastive")
    assert v[("text", "duplicate_share")] == pytest.approx(4 / 8)
    assert v[("image", "duplicate_share")] == 0.0
    same = torch.zeros(8, 8, dtype=torch.bool)
    for i, j in ((0, 1), (1, 0), (4, 5), (5, 4)):
        same[i, j] = True
    diag = torch.arange(8)
    want = 0.5 * (F.cross_entropy(z.masked_fill(same, -math.inf), diag)
                  + F.cross_entropy(z.t().masked_fill(same, -math.inf), diag))
    assert v[("logits", "loss_duplicates_masked")] == pytest.approx(float(want), rel=1e-5)
    assert v[("logits", "loss_duplicates_masked")] < v[("logits", "loss_diagonal_same_step")]
    # each side's copies alone: the text side's are all there are here, the image side has none
    assert v[("text", "loss_duplicates_masked")] == pytest.approx(float(want), rel=1e-5)
    assert v[("image", "loss_duplicates_masked")] == pytest.approx(v[("logits", "loss_diagonal_same_step")], rel=1e-5)
    # the least loss the batch allows: 4 of 8 rows with one copy each, ln 2 each; the model's loss is above it
    assert v[("text", "loss_floor_duplicates")] == pytest.approx(4 * math.log(2) / 8, rel=1e-6)
    assert v[("image", "loss_floor_duplicates")] == 0.0
    assert v[("logits", "loss_diagonal_same_step")] >= v[("text", "loss_floor_duplicates")]
    # the pairs that are not copies: their mean cosine, as computed from the rows
    u = F.normalize(b.detach(), dim=-1)
    sim = u @ u.t()
    apart = ~torch.eye(8, dtype=torch.bool) & ~same
    assert v[("text", "cosine_distinct")] == pytest.approx(float(sim[apart].mean()), abs=1e-6)


def _best_scale_loss(z):
    """Symmetric cross-entropy at the best of the factors 2^(k/2), k = 0..12, in plain torch."""
    diag = torch.arange(len(z))
    return min(0.5 * float(F.cross_entropy(a * z, diag) + F.cross_entropy(a * z.t(), diag))
               for a in (2.0 ** (k / 2) for k in range(13)))


def test_contrastive_cosine_counterfactual_matches_plain_torch():
    torch.manual_seed(4)
    model = _towers()
    x, t = torch.randn(16, 8), torch.randn(16, 6)
    with attach(model, None, probes=[Contrastive()], strict=True) as session:
        a, b = model["img"](x), model["txt"](t)  # raw rows: norms enter the logits
        raw = 3.0 * a @ b.t()
        session.observe(0, embeddings={"image": a, "text": b}, logits={"i2t": raw})
        u, w = F.normalize(a, dim=-1), F.normalize(b, dim=-1)  # unit rows at a soft temperature
        session.observe(10, embeddings={"image": u, "text": w}, logits={"i2t": 2.0 * u @ w.t()})
    v0, v1 = _values(session.records, "contrastive", 0), _values(session.records, "contrastive", 10)
    cos = (u @ w.t()).detach()
    for v, z in ((v0, raw.detach()), (v1, 2.0 * cos)):
        assert v[("logits", "loss_cosine_best_scale")] == pytest.approx(_best_scale_loss(cos), rel=1e-4)
        assert v[("logits", "loss_best_scale_same_step")] == pytest.approx(_best_scale_loss(z), rel=1e-4)
    # raw rows rank by norm as well as direction: their logits' best differs from the cosines' best
    assert v0[("logits", "loss_best_scale_same_step")] != pytest.approx(v0[("logits", "loss_cosine_best_scale")])


def test_contrastive_twin_columns_of_gathered_logits_and_their_masked_counterfactual():
    torch.manual_seed(5)
    model = _towers()
    x, t = torch.randn(8, 8), torch.randn(8, 6)
    with attach(model, None, probes=[Contrastive()], strict=True) as session:
        b = F.normalize(model["txt"](t), dim=-1)
        a = b + 0.1 * F.normalize(model["img"](x), dim=-1)  # pairs that match: the positive is each row's largest
        other = F.normalize(model["txt"](torch.randn(8, 6)), dim=-1)
        twin = 10.0 * a @ torch.cat([b, b]).t()  # a second rank that drew the same batch: every column twice
        session.observe(0, embeddings={"image": a, "text": b}, logits={"i2t": twin}, targets=torch.arange(8))
        distinct = 10.0 * a @ torch.cat([b, other]).t()  # near miss: other captions on the second rank
        session.observe(10, embeddings={"image": a, "text": b}, logits={"i2t": distinct})
    v, near = _values(session.records, "contrastive", 0), _values(session.records, "contrastive", 10)
    z, diag = twin.detach(), torch.arange(8)
    masked = z.clone()
    masked[diag, diag + 8] = -math.inf
    assert v[("logits", "twin_share")] == 1.0
    assert v[("logits", "loss_twins_masked")] == pytest.approx(float(F.cross_entropy(masked, diag)), rel=1e-5)
    assert v[("logits", "loss_target_same_step")] == pytest.approx(float(F.cross_entropy(z, diag)), rel=1e-5)
    # the twin took as much of the softmax as the positive: masking it takes ~ln 2 off each row
    assert v[("logits", "loss_target_same_step")] - v[("logits", "loss_twins_masked")] > 0.5
    assert near[("logits", "twin_share")] == 0.0
    assert near[("logits", "loss_twins_masked")] == pytest.approx(near[("logits", "loss_target_same_step")])


def test_contrastive_locates_each_pairs_caption_among_rectangular_candidates():
    torch.manual_seed(6)
    model = _towers()
    x, t, earlier = torch.randn(8, 8), torch.randn(8, 6), torch.randn(16, 6)
    with attach(model, None, probes=[Contrastive()], strict=True) as session:
        a, b = F.normalize(model["img"](x), dim=-1), F.normalize(model["txt"](t), dim=-1)
        bank = F.normalize(model["txt"](earlier), dim=-1).detach()  # 16 earlier captions before the batch's own
        z = 20.0 * a @ torch.cat([bank, b]).t() - 5.0  # a temperature and a bias do not hide the columns
        session.observe(0, embeddings={"image": a, "text": b}, logits={"i2t": z}, targets=torch.arange(8))
        session.observe(10, embeddings={"image": a, "text": b}, logits={"i2t": z}, targets=torch.arange(8) + 16)
    wrong, right = _values(session.records, "contrastive", 0), _values(session.records, "contrastive", 10)
    assert wrong[("logits", "pairs_located")] == 1.0 and wrong[("logits", "target_at_pair")] == 0.0
    assert right[("logits", "pairs_located")] == 1.0 and right[("logits", "target_at_pair")] == 1.0


def test_contrastive_near_miss_distinct_rows_are_not_duplicates():
    torch.manual_seed(3)
    model = _towers()
    with attach(model, None, probes=[Contrastive()], strict=True) as session:
        a, b, z, _ = _step(model, torch.randn(16, 8), torch.randn(16, 6))
        session.observe(0, embeddings={"image": a, "text": b}, logits={"i2t": z})
    v = _values(session.records, "contrastive")
    assert v[("text", "duplicate_share")] == 0.0 and v[("image", "duplicate_share")] == 0.0
    assert v[("logits", "loss_duplicates_masked")] == pytest.approx(v[("logits", "loss_diagonal_same_step")])


def test_contrastive_rectangular_logits_report_their_candidates():
    with attach(_towers(), None, probes=[Contrastive()], strict=True) as session:
        session.observe(0, logits={"i2t": torch.randn(4, 16)})
    v = _values(session.records, "contrastive")
    assert v[("logits", "rows")] == 4 and v[("logits", "cols")] == 16
    assert ("logits", "loss_diagonal") not in v  # no square diagonal to score against


def test_optimizer_counts_a_part_unfrozen_after_the_watch_started():
    model = _towers()
    for p in model["txt"].parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)  # built while frozen
    with attach(model, opt, probes=[OptimizerState()], strict=True) as session:
        for step in range(2):
            if step == 1:
                for p in model["txt"].parameters():
                    p.requires_grad_(True)  # unfrozen, but never added to the optimizer
            _, _, _, loss = _step(model, torch.randn(8, 8), torch.randn(8, 6))
            opt.zero_grad()
            loss.backward()
            session.observe(step)
            opt.step()
    assert _values(session.records, "optimizer", 0)[("outside", "with_grad")] == 0
    assert _values(session.records, "optimizer", 1)[("outside", "with_grad")] == 2


def test_contrastive_targets_outside_the_columns_give_nan_not_a_loss():
    with attach(_towers(), None, probes=[Contrastive()], strict=True) as session:
        session.observe(0, logits={"i2t": torch.randn(4, 4)}, targets=torch.tensor([0, 1, 2, -100]))
    v = _values(session.records, "contrastive")
    assert math.isnan(v[("logits", "loss_target")])
    assert v[("logits", "targets_distinct")] == pytest.approx(1.0)  # four distinct values, one of them invalid


@pytest.mark.parametrize("cls, decoupled", [(torch.optim.Adam, 0.0), (torch.optim.AdamW, 1.0)])
def test_optimizer_reads_each_groups_decay_its_kind_and_which_parameters_it_covers(cls, decoupled):
    model = _towers()
    opt = cls([{"params": [model["img"].weight, model["txt"].weight], "weight_decay": 0.3},
               {"params": [model["img"].bias, model["txt"].bias], "weight_decay": 0.0}], lr=1e-3)
    with attach(model, opt, probes=[OptimizerState()], strict=True) as session:
        for step in range(2):
            _, _, _, loss = _step(model, torch.randn(8, 8), torch.randn(8, 6))
            opt.zero_grad()
            loss.backward()
            session.observe(step)
            opt.step()
    v = _values(session.records, "optimizer")
    assert v[("group0", "weight_decay")] == pytest.approx(0.3) and v[("group1", "weight_decay")] == 0.0
    assert v[("group0", "decoupled")] == decoupled and v[("group1", "index")] == 1.0
    members = session.records[session.records.metric == "optimizer_group"]
    assert sorted(members.target) == ["img.weight", "txt.weight"] and set(members.value) == {0.0}
    assert set(members.step) == {0}  # once, while the groups stay as they are


def test_contrastive_soft_targets_entropy_and_argmax_match_plain_torch():
    model = _towers()
    x, t = torch.randn(8, 8), torch.randn(8, 6)
    a, b, z, _ = _step(model, x, t)
    sim = (a @ a.t() + b @ b.t()) / 2
    for sharp, targets in ((False, F.softmax(sim * 0.07, dim=-1)), (True, F.softmax(sim / 0.07, dim=-1))):
        with attach(model, None, probes=[Contrastive()], strict=True) as session:
            session.observe(0, embeddings={"image": a, "text": b}, logits={"image_to_text": z}, targets=targets)
        v = _values(session.records, "contrastive")
        p = targets.detach()
        expected = float((-(p * p.log()).sum(1) / math.log(8)).mean())
        assert v[("logits", "soft_target_entropy")] == pytest.approx(expected, rel=1e-5)
        assert (v[("logits", "soft_target_entropy")] > 0.99) != sharp
        on_diagonal = float((p.argmax(1) == torch.arange(8)).float().mean())
        assert v[("logits", "soft_target_on_diagonal")] == pytest.approx(on_diagonal)


def test_pairs_first_permutation_test_matches_plain_torch_once():
    from probes.pairs_first import NULL_DRAWS, PairsFirst

    x = torch.randn(32, 4)
    related, unrelated = x @ torch.randn(4, 6) + 0.1 * torch.randn(32, 6), torch.randn(32, 6)
    for y, high in ((related, True), (unrelated, False)):
        with attach(nn.Linear(4, 4), None, probes=[PairsFirst()], strict=True) as session:
            for step in range(3):
                session.observe(step, embeddings={"image": x, "text": y})
        v = _values(session.records, "pairs_first")
        assert set(session.records.step) == {0}  # once
        a, b = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
        a, b = a - a.mean(0), b - b.mean(0)
        cka = float((a.t() @ b).pow(2).sum() / ((a.t() @ a).norm() * (b.t() @ b).norm()))
        assert v[("pairs", "cka")] == pytest.approx(cka, rel=1e-5)
        assert v[("pairs", "z")] > 5 if high else abs(v[("pairs", "z")]) < 3
        assert 0 < v[("pairs", "null_sd")] < 1 and NULL_DRAWS == 64


def test_batch_drift_reads_copies_within_a_batch_and_their_vector_from_batch_to_batch_early_only():
    from probes.batch_drift import EARLY, BatchDrift

    g = torch.Generator().manual_seed(0)
    protos = torch.randn(EARLY + 5, 6, generator=g)
    spread = torch.randn(8, 6, generator=g)
    with attach(nn.Linear(4, 4), None, probes=[BatchDrift()], strict=True) as session:
        for step in range(EARLY + 5):
            # text: one caption repeated per batch, a new one each batch; image: spread rows, (B, T, D) pooled
            text = protos[step].expand(8, 6)
            image = (spread + 0.01 * step).unsqueeze(1).expand(8, 3, 6)
            session.observe(step, embeddings={"image": image, "text": text})
    df = session.records
    assert set(df.step) == set(range(EARLY))  # the first EARLY observations only
    for step in (1, 7):
        v = _values(df, "batch_drift", step)
        assert v[("text", "rows_cosine")] == pytest.approx(1.0, abs=1e-6)
        expected = float(F.normalize(protos[step], dim=0) @ F.normalize(protos[step - 1], dim=0))
        assert v[("text", "mean_cosine_prev")] == pytest.approx(expected, abs=1e-6)
        u = F.normalize(spread + 0.01 * step, dim=-1)
        off = (u @ u.t()).sum() - u.pow(2).sum()
        assert v[("image", "rows_cosine")] == pytest.approx(float(off / 56), abs=1e-6)
    assert ("text", "mean_cosine_prev") not in _values(df, "batch_drift", 0)  # nothing before the first batch


def test_optimizer_decay_per_step_read_for_sgd_only_and_the_schedule_peak():
    import torch

    from probes.optimizer import _decay_per_step

    w = torch.nn.Parameter(torch.ones(3))
    sgd = torch.optim.SGD([w], lr=0.2, momentum=0.9, weight_decay=0.1)
    assert abs(_decay_per_step(sgd, sgd.param_groups[0], 0.2) - 0.2) < 1e-9  # 0.2 x 0.1 / (1 - 0.9)
    adamw = torch.optim.AdamW([w], lr=1.0, weight_decay=0.1)  # large only because the lr is
    assert math.isnan(_decay_per_step(adamw, adamw.param_groups[0], 1.0))
    plain = torch.optim.SGD([w], lr=0.1)
    assert _decay_per_step(plain, plain.param_groups[0], 0.1) == 0.0
    onecycle = torch.optim.lr_scheduler.OneCycleLR(torch.optim.SGD([w], lr=0.1), max_lr=1e-3, total_steps=10)
    assert onecycle.optimizer.param_groups[0]["max_lr"] == 1e-3  # what the probe records as lr_schedule_peak
