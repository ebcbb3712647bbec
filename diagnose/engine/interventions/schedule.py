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
step in all. A script that steps a scheduler with an explicit epoch (`scheduler.step(epoch)`, torch's deprecated
form) sets its position instead of advancing it: a per-iteration schedule (OneCycleLR) called with the epoch after
every batch sits at iteration `epoch` for the whole epoch, the start of its warm-up. So the script's calls (not
torch's own: SequentialLR resets the next scheduler with `step(0)`) lose the epoch argument, and each advances the
schedule by one, as `scheduler.step()` does. Not applicable: no scheduler on the optimizer, or the script steps
every one of them after every optimizer step without an epoch argument.
"""

from __future__ import annotations

import sys
from typing import Any

from probes.optimizer import schedulers_of

from .base import Intervention, NotApplicable, require_optimizer


class StepSchedule(Intervention):
    name = "step_schedule"
    tests = ("lr_schedule",)
    changes = ("a learning-rate scheduler of the optimizer that the script never steps stepped once per optimizer "
               "step; the script's step(epoch) calls advance it by one instead of setting its position")

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
        self._epoch_calls = 0  # the script's step(epoch) calls, made plain steps
        self._patched: list[tuple[type, Any]] = []  # (scheduler class, its own `step` before, or None)
        ours = {id(s) for s in found}
        for cls in {type(s) for s in found if type(s).__name__ != "ReduceLROnPlateau"}:  # its argument is a metric
            # on the class, not the instance: a scheduler's state_dict holds its instance attributes
            self._patched.append((cls, cls.__dict__.get("step")))
            cls.step = self._plain_step(cls.step, ours)

    def _plain_step(self, step: Any, ours: set[int]) -> Any:
        """`step` without the epoch argument on the script's calls to the watched optimizer's schedulers (torch's
        own calls, and other schedulers, pass through as they are)."""
        def plain(sched, *args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if (id(sched) in ours and (args or kwargs.get("epoch") is not None)
                    and caller.split(".", 1)[0] != "torch"):
                self._epoch_calls += 1
                if not self.reached:
                    self.reached.append(f"the script's step(epoch={(args or (kwargs['epoch'],))[0]}) advanced the "
                                        "schedule by one instead of setting its position")
                out = step(sched)
                self._describe()
                return out
            return step(sched, *args, **kwargs)
        return plain

    def close(self) -> None:
        for cls, own in getattr(self, "_patched", []):
            if own is None:
                del cls.step  # inherited again
            else:
                cls.step = own
        self._patched = []

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
        self._describe()

    def _describe(self) -> None:
        names = ", ".join(sorted({type(s).__name__ for s in self._sched}))
        by_script = sum(self._by_script.values())
        self.did[:] = [f"stepped {names} {self._stepped} time(s), once per optimizer step the script did not"
                       + (f" (the script stepped it after {by_script})" if by_script else "")
                       + (f"; stopped: {self._failed}" if self._failed else "")
                       + (f"; {self._epoch_calls} step(epoch) call(s) of the script advanced it by one instead"
                          if self._epoch_calls else "")]

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if not self._epoch_calls and all(n >= 2 and self._by_script[k] == n for k, n in self._intervals.items()):
            raise NotApplicable(f"{self.name}: the script steps every scheduler of the optimizer after every "
                                f"optimizer step ({', '.join(type(s).__name__ for s in self._sched)})")
