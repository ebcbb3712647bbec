"""step_schedule: a learning-rate scheduler stepped once per optimizer step where the script does not step it (tests
lr_schedule).

`hold_lr` tests a schedule that runs and decays too far; this tests one that does not run at the optimizer's pace: a
OneCycleLR or a warm-up whose `step()` is lost (behind a wrapper whose guard is written backwards, under a condition
never true, or simply forgotten) leaves the lr at the value the scheduler set at construction, max_lr / 25 for
OneCycleLR, 0 for a linear warm-up; a CyclicLR or OneCycleLR sized in batches but stepped once per epoch climbs one
of its steps per epoch. The schedulers of the watched optimizer (torch `LRScheduler` objects whose `optimizer` is
it, found once when the watch opens) are watched from one optimizer step to the next: one whose `last_epoch` did not
move between two steps is stepped in the next step's pre-hook, so the step takes the lr the schedule meant for it;
where the script stepped it (at an epoch's end) it is not stepped again, so the schedule advances once per optimizer
step in all. Not applicable: no scheduler on the optimizer, or the script steps every one of them after every
optimizer step.
"""

from __future__ import annotations

from typing import Any

from probes.optimizer import schedulers_of

from .base import Intervention, NotApplicable, require_optimizer


class StepSchedule(Intervention):
    name = "step_schedule"
    tests = ("lr_schedule",)
    changes = "a learning-rate scheduler of the optimizer that the script never steps stepped once per optimizer step"

    def setup(self, watch: Any) -> None:
        opt = require_optimizer(watch, self.name)
        found = schedulers_of(opt)
        if not found:
            raise NotApplicable(f"{self.name}: no torch LRScheduler drives the watched optimizer")
        self._expected: dict[int, int | None] = {id(s): None for s in found}  # last_epoch after our last look
        self._sched = found
        self._stepped = 0
        self._intervals = {id(s): 0 for s in found}  # optimizer steps seen since our first look
        self._by_script = {id(s): 0 for s in found}  # of those, the ones after which the script had stepped it
        self._failed: str | None = None

    def before_step(self, optimizer: Any) -> None:
        for s in self._sched:
            key = id(s)
            expected, now = self._expected[key], s.last_epoch
            if expected is not None:
                self._intervals[key] += 1
                if now != expected:
                    self._by_script[key] += 1  # the script stepped it since the last optimizer step
                elif self._failed is None:
                    try:
                        s.step()
                        self._stepped += 1
                    except Exception as exc:  # a OneCycleLR past its total_steps: the schedule is over
                        self._failed = f"{type(s).__name__}.step() raised {type(exc).__name__}: {exc}"
            self._expected[key] = s.last_epoch
        names = ", ".join(sorted({type(s).__name__ for s in self._sched}))
        by_script = sum(self._by_script.values())
        self.did[:] = [f"stepped {names} {self._stepped} time(s), once per optimizer step the script did not"
                       + (f" (the script stepped it after {by_script})" if by_script else "")
                       + (f"; stopped: {self._failed}" if self._failed else "")]

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if all(n >= 2 and self._by_script[k] == n for k, n in self._intervals.items()):
            raise NotApplicable(f"{self.name}: the script steps every scheduler of the optimizer after every "
                                f"optimizer step ({', '.join(type(s).__name__ for s in self._sched)})")
