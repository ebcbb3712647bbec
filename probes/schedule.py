"""When the expensive probes run: every `every` steps (fixed), or spaced under a budget of the step time.

Expensive work (attention entropy capture, collapse spectra, latent statistics, the contrastive
counterfactuals) costs a multiple of a cheap step on small models and little on large ones. Under a
budget its spacing follows what it costs here:

- cost: measured on the step itself, not between steps (a pause for evaluation or checkpointing
  falls between steps, often on round step numbers, and would be taken for probe time): the excess of
  an expensive step's forward+backward (from its first forward with autograd on to `observe`; only
  where a probe looks inside the forward) and of its `observe` over their medians on recent cheap
  steps; the estimate is the median of the last `COST_WINDOW` expensive steps' costs;
- spacing = ceil(cost / (budget * median step)), so expensive work averages at most `budget` of the
  step time; never below `floor` (the fixed default the rules were calibrated with) and
- never above what the rules need to decide: a condition read on expensive steps alarms only after it
  held over `readings` observations while the optimizer moved the weights by `settle` times their norm
  (`diagnose.core.rules.persistence`), so at the measured update/param per step u (median of recent
  steps) the weights settle in settle / u steps and at least `readings` expensive steps must fall in
  them: spacing <= settle / (u * readings). Without an update measurement (no optimizer, no gradient
  probe yet) the spacing stays at `floor`. `MAX_EVERY` bounds it in any case.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from typing import Callable, Sequence

STEP_WINDOW = 31  # intervals in the median step time (as the online rules' budget)
COST_WINDOW = 5  # expensive steps in the cost estimate
# The end-of-run window the rules read is the last 20% of a series' readings, at least 5: at 100 steps
# apart, those 5 readings already span 500 steps. Wider spacing would make the end window stale.
MAX_EVERY = 100
DEFAULT_FLOOR = 10
# Default share of the median step time the expensive probes may take on average (budget mode): a few
# percent, the order of the online rules' 2% (`diagnose.engine.online`), on top of the cheap probes.
PROBE_BUDGET = 0.05


class ExpensiveSchedule:
    """Which steps run the expensive probes.

    Args:
        every: fixed spacing (``step % every == 0``), or None for the budget.
        budget: share of the median step time expensive work may take on average (budget mode).
        floor: the smallest spacing in budget mode.
        readings, settle: what the persistence gate needs (see module docstring); None: no cap from the rules.
        updates: returns the recent model-level update/param values (the gradient probe's).
    """

    def __init__(self, every: int | None = DEFAULT_FLOOR, budget: float | None = None, floor: int = DEFAULT_FLOOR,
                 readings: int | None = None, settle: float | None = None,
                 updates: Callable[[], Sequence[float]] | None = None) -> None:
        if every is None and not (budget is not None and 0 < budget < 1):
            raise ValueError(f"probe budget={budget!r}: expected a share of the step time in (0, 1)")
        self.every, self.budget, self.floor = every, budget, max(1, int(floor))
        self.readings, self.settle, self.updates = readings, settle, updates
        self.spacing = self.every or self.floor
        self.next = 0  # budget mode: the next expensive step (step 0 always)
        self.ran = 0
        self.spacings: list[int] = []  # budget mode: the spacing chosen after each expensive step
        self._intervals: deque[float] = deque(maxlen=STEP_WINDOW)  # between observes, cheap steps
        self._observe_s: deque[float] = deque(maxlen=STEP_WINDOW)  # inside observe, cheap steps
        self._fb_s: deque[float] = deque(maxlen=STEP_WINDOW)  # first forward to observe, cheap steps
        self._costs: deque[float] = deque(maxlen=COST_WINDOW)
        self._t_last: float | None = None  # start of the last observe
        self._fwd: float | None = None  # start of the first forward since the last observe
        self._fb: float | None = None  # forward+backward time of the step being observed
        self._last_expensive: int | None = None
        self._prev_expensive = False

    @property
    def fixed(self) -> bool:
        return self.every is not None

    def due(self, step: int) -> bool:
        if self.every is not None:
            return step % self.every == 0
        last = self._last_expensive
        # the step of the last expensive run asked again (its observe after its hooks), or step numbers
        # that went back (a counter restarted per epoch): due, and the spacing counts from there
        return step >= self.next or (last is not None and step <= last)

    def forward_started(self) -> None:
        """A forward with autograd on began (the forward scope's root pre-hook): the first one since the
        last `observe` starts the step's forward+backward time."""
        if self._fwd is None:
            self._fwd = time.perf_counter()

    def observed(self, step: int, expensive: bool) -> None:
        """Called at the start of every `observe(step)`, `expensive` = `due(step)`."""
        now = time.perf_counter()
        if self._t_last is not None and not expensive and not self._prev_expensive:
            self._intervals.append(now - self._t_last)  # the step time: intervals without expensive work
        self._t_last, self._prev_expensive = now, expensive
        self._fb = None if self._fwd is None else now - self._fwd
        self._fwd = None

    def finished(self, step: int, expensive: bool) -> None:
        """Called at the end of every `observe(step)`: books the step's cost, schedules the next expensive one."""
        spent = time.perf_counter() - (self._t_last or 0.0)
        if not expensive:
            self._observe_s.append(spent)
            if self._fb is not None:
                self._fb_s.append(self._fb)
            return
        self.ran += 1
        self._last_expensive = step
        if self.every is not None:
            return
        if self._observe_s:
            cost = max(0.0, spent - statistics.median(self._observe_s))
            if self._fb is not None and self._fb_s:
                cost += max(0.0, self._fb - statistics.median(self._fb_s))
            self._costs.append(cost)
            self._reschedule()
        self.next = step + self.spacing

    def _reschedule(self) -> None:
        step_time = statistics.median(self._intervals) if self._intervals else 0.0
        cost = statistics.median(self._costs)
        # the smallest spacing within budget (less a rounding margin: 80.000000001 is 80)
        want = math.ceil(cost / (self.budget * step_time) - 1e-9) if step_time > 0 else self.floor
        self.spacing = min(max(self.floor, want), self.cap())
        self.spacings.append(self.spacing)

    def cap(self) -> int:
        """The widest spacing the rules allow now (see module docstring)."""
        if not (self.readings and self.settle and self.updates):
            return self.floor
        recent = [u for u in self.updates() if math.isfinite(u) and u > 0]
        if not recent:
            return self.floor
        settle_steps = self.settle / statistics.median(recent)
        return int(min(MAX_EVERY, max(self.floor, settle_steps // self.readings)))

    def cost_share(self) -> float | None:
        """Measured expensive cost per step, as a share of the median step time (budget mode)."""
        if not self._costs or not self._intervals:
            return None
        return statistics.median(self._costs) / self.spacing / statistics.median(self._intervals)

    def describe(self, observed: int, probes: Sequence[str]) -> str:
        """One line for the coverage section: how often the expensive probes ran, and why that often."""
        names = ", ".join(probes) if probes else "none in this preset"
        head = f"{self.ran} of {observed} observed steps ({names})"
        if self.every is not None:
            return f"{head}: every {self.every} steps (fixed by expensive_every)"
        lo, hi = (min(self.spacings), max(self.spacings)) if self.spacings else (self.spacing, self.spacing)
        share = self.cost_share()
        step_ms = 1e3 * statistics.median(self._intervals) if self._intervals else math.nan
        measured = "cost not measured yet" if share is None else (
            f"measured cost {100 * share:.1f}% of the median step time ({step_ms:.3g} ms)")
        return (f"{head}: every {lo}-{hi} steps (last {self.spacing}) under a budget of {100 * self.budget:g}% of "
                f"the step time, at least every {self.cap()} steps for the rules; {measured}")


# The gradient probe's full measurement (grad and parameter norms, zero-gradient shares, the update snapshot,
# its delta and norm: six passes over every parameter) on one in FULL_EVERY measured steps once the run is
# long enough, and on every expensive step; the other measured steps pay one pass (the grad norms, which
# also say whether any gradient is non-finite). How long is long enough comes from the rules' end-of-run
# window (`diagnose.core.definitions`): the last END_FRAC of the steps, but at least END_MIN_POINTS readings.
# A series read one step in k holds END_MIN_POINTS readings in that window only while
# k <= END_FRAC * steps / END_MIN_POINTS; sparser, the window would reach back before the last 20% and the
# rules that read it (weights shrinking, dead or vanishing gradients) would decide later than on every-step
# readings. So the spacing is 1 (every step full) over the first 50 measured steps and grows to FULL_EVERY
# at 250. The cumulative update counts unmeasured steps at the measured mean
# (`diagnose.core.rules.gradients`), and the update-ratio peaks are Adam's first steps, all measured.
END_FRAC, END_MIN_POINTS = 0.2, 5  # as diagnose.core.definitions (tests/probes/test_probe_schedule.py checks)
FULL_EVERY = 10


class FullSchedule:
    """Which measured steps get the full gradient measurement (see FULL_EVERY). `due` is asked once per
    measured step, in order: full on multiples of `spacing()` and on expensive steps."""

    def __init__(self, every: int = FULL_EVERY) -> None:
        if int(every) < 1:
            raise ValueError(f"full gradient schedule every={every!r}: expected every >= 1")
        self.every = int(every)
        self.measured = 0  # measured steps asked so far
        self.ran = 0  # of those, full

    def spacing(self) -> int:
        """The widest spacing that leaves END_MIN_POINTS readings in the rules' end window now."""
        return max(1, min(self.every, int(END_FRAC * self.measured / END_MIN_POINTS)))

    def due(self, expensive: bool) -> bool:
        self.measured += 1
        # counted from the first measured step: steps 0, 10, 20, ... when every step is measured from 0 (where
        # the default expensive steps also fall)
        full = expensive or (self.measured - 1) % self.spacing() == 0
        self.ran += full
        return full

    def describe(self) -> str:
        """One line for the coverage section: on how many measured steps the sampled metrics were taken."""
        how = "every measured step" if self.every == 1 else (
            f"every step of the first {int(2 * END_MIN_POINTS / END_FRAC)}, then sparser up to one in {self.every} "
            f"from step {int(self.every * END_MIN_POINTS / END_FRAC)} on, and every expensive step")
        return (f"param_norm, grad_to_param, zero_grad_frac, update_to_param and the per-parameter / module / layer "
                f"rows measured on {self.ran} of {self.measured} measured steps ({how}); the model's grad_norm and "
                "nonfinite_grad on every measured step")
