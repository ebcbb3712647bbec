"""step_schedule: a learning-rate scheduler the script never steps stepped once per optimizer step (tests
lr_schedule).

`hold_lr` tests a schedule that runs and decays too far; this tests one that never runs: a OneCycleLR or a warm-up
whose `step()` is lost (behind a wrapper whose guard is written backwards, under a condition never true, or simply
forgotten) leaves the lr at the value the scheduler set at construction, max_lr / 25 for OneCycleLR, 0 for a linear
warm-up. The schedulers of the watched optimizer (torch `LRScheduler` objects whose `optimizer` is it, found once when
the watch opens) are watched from one optimizer step to the next: one whose `last_epoch` did not move between two
steps is stepped in the next step's pre-hook, so the step takes the lr the schedule meant for it. A scheduler the
script does step (`last_epoch` moved by the script, per step or per epoch) is left alone from then on. Not
applicable: no scheduler on the optimizer, or the script steps every one of them.
"""

from __future__ import annotations

import gc
from typing import Any

from .base import Intervention, NotApplicable, require_optimizer


def schedulers_of(optimizer: Any) -> list[Any]:
    from torch.optim.lr_scheduler import LRScheduler

    # type(o), not isinstance: isinstance reads `__class__`, which some lazy module objects answer with a warning
    return [o for o in gc.get_objects()
            if issubclass(type(o), LRScheduler) and getattr(o, "optimizer", None) is optimizer]


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
        self._by_script: set[int] = set()
        self._failed: str | None = None

    def before_step(self, optimizer: Any) -> None:
        for s in self._sched:
            key = id(s)
            if key in self._by_script:
                continue
            expected, now = self._expected[key], s.last_epoch
            if expected is not None and now != expected:
                self._by_script.add(key)  # the script stepped it since the last optimizer step
                continue
            if expected is not None and self._failed is None:
                try:
                    s.step()
                    self._stepped += 1
                except Exception as exc:  # a OneCycleLR past its total_steps: the schedule is over
                    self._failed = f"{type(s).__name__}.step() raised {type(exc).__name__}: {exc}"
            self._expected[key] = s.last_epoch
        names = ", ".join(sorted({type(s).__name__ for s in self._sched if id(s) not in self._by_script}))
        self.did[:] = [f"stepped {names} {self._stepped} time(s), once per optimizer step the script did not"
                       + (f"; stopped: {self._failed}" if self._failed else "")]

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if len(self._by_script) == len(self._sched):
            raise NotApplicable(f"{self.name}: the script steps every scheduler of the optimizer "
                                f"({', '.join(type(s).__name__ for s in self._sched)})")
