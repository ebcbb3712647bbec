"""`diagnose.watch` spaces the expensive probes under a budget by default; `expensive_every` fixes them."""

import pytest
import torch
from torch import nn

import diagnose
from diagnose.core.rules.gradients import SETTLED_CUMULATIVE_UPDATE
from diagnose.core.rules.persistence import PERSIST_MIN_OBS

# these tests measure the timed budget itself (tests/conftest.py fixes the spacing elsewhere)
pytestmark = pytest.mark.probe_budget


def _watch(steps=12, out=None, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(16, 6)
    with diagnose.watch(model, opt, out, alarm="off", evaluate_every=None, **kwargs) as w:
        for step in range(steps):
            opt.zero_grad()
            out = model(x)
            loss = out.pow(2).mean()
            loss.backward()
            w.observe(step, losses={"total": loss}, embeddings={"image": out}, batch_size=16)
            opt.step()
    return w


def test_default_is_the_probe_budget_bounded_by_the_persistence_gate():
    w = _watch()
    sched = w.session.schedule
    assert not sched.fixed and sched.budget == 0.05
    assert (sched.readings, sched.settle) == (PERSIST_MIN_OBS, SETTLED_CUMULATIVE_UPDATE)
    line = w.coverage()["expensive_probes_ran"]
    assert line.startswith("2 of 12 observed steps") and "budget of 5% of the step time" in line


def test_explicit_expensive_every_keeps_fixed_spacing():
    w = _watch(expensive_every=4)
    assert w.session.schedule.fixed
    assert w.coverage()["expensive_probes_ran"].startswith("3 of 12 observed steps")
    assert "every 4 steps (fixed by expensive_every)" in w.coverage()["expensive_probes_ran"]


def test_bad_probe_budget_is_one_clear_error():
    with pytest.raises(ValueError, match=r"probe budget=2: expected a share of the step time in \(0, 1\)"):
        diagnose.watch(nn.Linear(2, 2), probe_budget=2)


def test_report_coverage_says_how_often_the_expensive_probes_ran(tmp_path):
    _watch(out=tmp_path / "run", plots="deferred")
    report = (tmp_path / "run" / "report.md").read_text()
    assert ("- expensive probes ran: 2 of 12 observed steps (softmax_entropy, collapse, latent_stats, contrastive, "
            "forward_weights)") in report
