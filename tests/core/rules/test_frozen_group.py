"""Rule frozen_in_optimizer: tensors in the optimizer that were meant to train and have requires_grad=False."""

from __future__ import annotations

import torch
from torch import nn

import diagnose
from diagnose.core import rules as R

from .harness import LN_B, ctx, frame, loss, one, rec
from .test_persistence import N, moving, noisy


def _groups(frozen, trainable, stepped=0, lr=1e-3, level=LN_B, n=N):
    """Group0: the head (4 trainable tensors); group1: `frozen` frozen and `trainable` trainable tensors, `stepped`
    of the frozen ones with optimizer state."""
    g1 = {"frozen": frozen, "params": trainable, "frozen_stepped": stepped, "lr": lr}
    return frame(rec("optimizer", "group0", "frozen", [0] * n), rec("optimizer", "group0", "params", [4] * n),
                 rec("optimizer", "group0", "lr", [1e-3] * n),
                 *[rec("optimizer", "group1", metric, [v] * n) for metric, v in g1.items()],
                 loss("loss_clip", noisy(level if isinstance(level, list) else [level] * n)), moving(n))


def test_a_resumed_group_of_frozen_tensors_the_optimizer_stepped_before_is_an_error_that_alarms():
    df = _groups(frozen=75, trainable=0, stepped=75)
    f = one(R.frozen_in_optimizer(df, ctx()), "frozen_in_optimizer")
    assert f.severity == "error" and f.target == "group1"
    assert f.evidence["frozen_tensors"] == 75 and f.evidence["frozen_stepped"] == 75
    assert f.evidence["whole_groups_frozen"] == ["group1"] and "stepped them before" in f.message
    assert R.frozen_in_optimizer.alarm(f, df) is True
    assert R.declarations()["frozen_in_optimizer"].cause == "no_gradient_path"
    # a run that learned with it: information only, no alarm
    learned = _groups(frozen=75, trainable=0, stepped=75, level=0.2 * LN_B)
    f = one(R.frozen_in_optimizer(learned, ctx()), "frozen_in_optimizer")
    assert f.severity == "info" and R.frozen_in_optimizer.alarm(f, learned) is False


def test_either_reading_alone_finds_it_and_waits_for_the_loss_to_stay():
    whole = _groups(frozen=10, trainable=0)  # a group of its own with an lr, never stepped
    f = one(R.frozen_in_optimizer(whole, ctx()), "frozen_in_optimizer")
    assert f.evidence["frozen_stepped"] == 0 and f.evidence["whole_groups_frozen"] == ["group1"]
    stepped = _groups(frozen=10, trainable=3, stepped=10)  # frozen again beside trainable tensors of the group
    assert one(R.frozen_in_optimizer(stepped, ctx()), "frozen_in_optimizer").evidence["whole_groups_frozen"] == []
    # one reading alone alarms once it persisted and the loss did not fall; a falling loss keeps it quiet
    assert R.frozen_in_optimizer.alarm(f, whole) is True
    falling = _groups(frozen=10, trainable=0, level=[LN_B * (1 - 0.3 * i / N) for i in range(N)])
    f = one(R.frozen_in_optimizer(falling, ctx()), "frozen_in_optimizer")
    assert f.severity == "error" and R.frozen_in_optimizer.alarm(f, falling) is False


def test_near_misses_a_frozen_backbone_mixed_into_one_group_an_lr_of_zero_and_no_frozen_tensor():
    # AdamW(model.parameters()) over a model whose backbone is frozen: trainable and frozen in one group, no state
    assert R.frozen_in_optimizer(_groups(frozen=30, trainable=8), ctx()) == []
    assert R.frozen_in_optimizer(_groups(frozen=30, trainable=0, lr=0.0), ctx()) == []
    assert R.frozen_in_optimizer(_groups(frozen=0, trainable=8), ctx()) == []


def test_the_probe_reads_frozen_tensors_and_their_optimizer_state_through_watch():
    """A resumed optimizer: the second group was stepped before, its tensors are frozen again."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    opt = torch.optim.AdamW([{"params": model[1].parameters()}, {"params": model[0].parameters(), "lr": 1e-4}], lr=1e-3)
    x = torch.randn(16, 8)
    model(x).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
    model[0].requires_grad_(False)
    w = diagnose.watch(model, opt, out=None, alarm="off", probes="cheap")
    for step in range(3):
        out = model(x)
        out.pow(2).mean().backward()
        w.observe(step, losses={"clip": out.pow(2).mean()})
        opt.step()
        opt.zero_grad()
    w.close()
    rows = w.records[(w.records.probe == "optimizer") & (w.records.target == "group1")]
    last = rows.groupby("metric")["value"].last()
    assert last["frozen"] == 2 and last["frozen_stepped"] == 2 and last["params"] == 0
    head = w.records[(w.records.probe == "optimizer") & (w.records.target == "group0")].groupby("metric")["value"]
    assert head.last()["frozen"] == 0
