"""step_optimizer: the optimizer's step, called where the script never reaches it (tests learning_rate_too_low, whose
finding `optimizer_never_stepped` it answers).

`if scheduler: scheduler.step() else: optimizer.step()` (ClementPinard/SfmLearner-Pytorch#5), a step under a condition
that never holds: the gradients are computed every batch and no update is ever applied. For the run, after each
`observe` (which follows the step's backward) that had no optimizer step since the previous one, the watch calls
`optimizer.step()` on the gradients the backward left, from the second observe on (the first step shows whether the
script steps at all); a step the script takes itself is never doubled (from the first the script takes, the fix
does nothing more). Not applicable: the script stepped the optimizer between its first two observations.
"""

from __future__ import annotations

from typing import Any

from .base import Intervention, NotApplicable, require_optimizer


class StepOptimizer(Intervention):
    name = "step_optimizer"
    tests = ("learning_rate_too_low",)
    answers = ("optimizer_never_stepped",)
    changes = ("optimizer.step() called after each observe that no optimizer step followed since the previous one "
               "(a script that never reaches its step); never beside a step the script takes")

    def setup(self, watch: Any) -> None:
        self._opt = require_optimizer(watch, self.name)
        self._script_steps = 0  # the script's own calls of optimizer.step()
        self._ours = 0
        self._observes = 0
        self._stepping = False

    def after_step(self, optimizer: Any) -> None:
        if not self._stepping:
            self._script_steps += 1

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self._observes += 1
        if self._observes >= 2 and self._script_steps and not self._ours:
            raise NotApplicable(f"{self.name}: the script steps the optimizer itself "
                                f"({self._script_steps} call(s) of optimizer.step() by its second observe)")

    def after_observe(self, watch: Any) -> None:
        """After the watch read the step (its probes saw the gradients as the script left them): the step the
        script did not take since the previous observe, on those gradients."""
        if self._observes < 2 or self._script_steps:  # the first step shows whether the script steps itself; if it
            return  # does, never a second step beside its own
        self._stepping = True
        try:
            self._opt.step()
        finally:
            self._stepping = False
        self._ours += 1
        self.did[:] = [f"optimizer.step() called after {self._ours} observe(s) that no step of the script followed"]
        self.reached[:] = self.did
