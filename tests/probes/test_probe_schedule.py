"""The expensive probes' schedule: fixed spacing, or spaced under a budget of the measured step time and
bounded by what the rules' persistence gate needs."""

import pytest
import torch
from torch import nn

from probes import attach, schedule
from probes.schedule import ExpensiveSchedule

# the timed budget itself (tests/conftest.py fixes the spacing elsewhere)
pytestmark = pytest.mark.probe_budget


class Clock:
    """A fake perf_counter: each step advances it by the step's duration."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _drive(sched, clock, steps, step_s=0.010, expensive_extra_s=0.040, pause_every=0, pause_s=5.0):
    """Observe `steps` steps of `step_s`: 2 ms between observe and the next forward (optimizer), 6 ms of
    forward+backward, 2 ms in observe; an expensive step adds half its extra time to its forward (hooks) and
    half to its observe (spectra). With `pause_every`, a pause (evaluation) before every such step."""
    ran = []
    for step in range(steps):
        exp = sched.due(step)
        clock.t += 0.002 + (pause_s if pause_every and step % pause_every == 0 else 0.0)
        sched.forward_started()
        clock.t += 0.006 + (expensive_extra_s / 2 if exp else 0.0)
        sched.observed(step, exp)
        clock.t += 0.002 + (expensive_extra_s / 2 if exp else 0.0)
        sched.finished(step, exp)
        if exp:
            ran.append(step)
    return ran


def test_fixed_spacing_keeps_its_meaning():
    sched = ExpensiveSchedule(every=3)
    assert [s for s in range(10) if sched.due(s)] == [0, 3, 6, 9]
    assert "every 3 steps (fixed by expensive_every)" in sched.describe(10, ["collapse"])


@pytest.mark.parametrize("update, want", [
    (None, 10),    # no update measurement: the rules' need is unknown, the spacing stays at the floor
    (1e-4, 80),    # weights settle in 10^4 steps: the budget decides, 0.040 / (0.05 * 0.010) = 80
    (1e-2, 16),    # settle in 100 steps, 6 readings needed in them: at most every 16 steps
    (1e-6, 80),    # the budget's 80 is under MAX_EVERY
])
def test_budget_spacing_from_measured_cost_and_rules_cap(monkeypatch, update, want):
    clock = Clock()
    monkeypatch.setattr(schedule.time, "perf_counter", clock)
    updates = (lambda: [update] * 5) if update is not None else (lambda: [])
    sched = ExpensiveSchedule(every=None, budget=0.05, readings=6, settle=1.0, updates=updates)
    ran = _drive(sched, clock, 400)
    assert ran[:2] == [0, 10]  # the floor until a cost is measured (after step 10)
    assert sched.spacing == want
    assert all(b - a == want for a, b in zip(ran[2:], ran[3:]))
    share = sched.cost_share()
    assert share == pytest.approx(0.040 / want / 0.010, rel=1e-6)
    assert share <= 0.05 + 1e-9 or want < 80  # within budget unless the rules asked for more readings
    line = sched.describe(400, ["collapse", "softmax_entropy"])
    assert f"{len(ran)} of 400 observed steps (collapse, softmax_entropy)" in line
    assert "budget of 5% of the step time" in line and f"(last {want})" in line


def test_pauses_between_steps_are_not_taken_for_probe_cost(monkeypatch):
    """Evaluation every 10 steps falls before the expensive steps (round numbers): the cost is read on the
    step itself, so the spacing is the same as without pauses."""
    clock = Clock()
    monkeypatch.setattr(schedule.time, "perf_counter", clock)
    sched = ExpensiveSchedule(every=None, budget=0.05, readings=6, settle=1.0, updates=lambda: [1e-4])
    _drive(sched, clock, 300, pause_every=10)
    assert sched.spacing == 80


def test_cap_never_exceeds_max_every(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(schedule.time, "perf_counter", clock)
    sched = ExpensiveSchedule(every=None, budget=0.01, readings=6, settle=1.0, updates=lambda: [1e-7])
    _drive(sched, clock, 600, expensive_extra_s=0.5)  # wants 0.5 / (0.01 * 0.01) = 5000 steps
    assert sched.spacing == schedule.MAX_EVERY


def test_step_numbers_that_go_back_restart_the_spacing():
    sched = ExpensiveSchedule(every=None, budget=0.05)
    ran = [s for s in [*range(25), *range(25)] if sched.due(s) and (sched.finished(s, True) or True)]
    assert ran == [0, 10, 20, 0, 10, 20]


@pytest.mark.parametrize("budget", [0.0, 1.5, float("nan")])
def test_bad_budget_is_refused(budget):
    with pytest.raises(ValueError, match="budget"):
        ExpensiveSchedule(every=None, budget=budget)


def test_session_under_budget_counts_and_reports_expensive_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(16, 6)
    with attach(model, optimizer=opt, probes="all", expensive_every=None, expensive_budget=0.05, strict=True) as s:
        for step in range(25):
            opt.zero_grad()
            out = model(x)
            out.pow(2).mean().backward()
            s.observe(step, embeddings={"image": out.detach()})
            opt.step()
    assert not s.schedule.fixed
    cov = s.coverage()
    assert cov["steps_measured_expensive"] == s.schedule.ran >= 2  # step 0 and step 10 at least (floor 10)
    assert cov["expensive_probes_ran"].startswith(f"{s.schedule.ran} of 25 observed steps (softmax_entropy, collapse")
    # expensive records (the collapse spectrum) exist exactly on the expensive steps
    rank = s.records[(s.records.probe == "collapse") & (s.records.metric == "effective_rank")]
    assert len(rank) == s.schedule.ran and 0 in set(rank.step)


def test_full_schedule_reads_the_rules_end_window():
    """probes may not import diagnose: the end window's constants are mirrored, and must stay equal."""
    from diagnose.core import definitions

    assert (schedule.END_FRAC, schedule.END_MIN_POINTS) == (definitions.END_FRAC, definitions.END_MIN_POINTS)
