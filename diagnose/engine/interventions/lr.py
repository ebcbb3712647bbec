"""Learning-rate interventions, applied around every optimizer step (a step pre-hook sets the lr each
param group steps with; the post-hook gives the user's value back), so they compose with whatever
scheduler the script runs: the scheduler keeps stepping the user's own lr.

  lr_down   every group's lr x 0.1 (tests learning_rate_too_high)
  lr_up     every group's lr x 10 (tests learning_rate_too_low)
  warmup    a linear warm-up over the first `steps` optimizer steps on top of the user's schedule
            (tests learning_rate_too_high: the early steps that rewrite the layers)
  hold_lr   each group steps at its starting lr (the scheduler's `initial_lr`, else the lr when the watch
            opened) whatever the schedule says (tests lr_schedule)
"""

from __future__ import annotations

from typing import Any

from .base import Intervention, NotApplicable, require_optimizer


class _AroundStep(Intervention):
    def setup(self, watch: Any) -> None:
        opt = require_optimizer(watch, self.name)
        self._saved: list[Any] = []
        self._steps = 0
        self._start = [g.get("initial_lr", g["lr"]) for g in opt.param_groups]

    def factor(self, group_index: int, lr: float) -> float:
        raise NotImplementedError

    def before_step(self, optimizer: Any) -> None:
        self._saved = [g["lr"] for g in optimizer.param_groups]
        for i, g in enumerate(optimizer.param_groups):
            g["lr"] = self.new_lr(i, g["lr"])
        if not self.did:
            self.did.append(self.text(optimizer))

    def after_step(self, optimizer: Any) -> None:
        for g, lr in zip(optimizer.param_groups, self._saved):
            g["lr"] = lr
        self._steps += 1

    def new_lr(self, i: int, lr: Any) -> Any:
        return lr * self.factor(i, lr)

    def text(self, optimizer: Any) -> str:
        return self.changes


class LrDown(_AroundStep):
    name = "lr_down"
    tests = ("learning_rate_too_high",)
    changes = "every param group's learning rate x 0.1 at every step (on top of the script's schedule)"
    defaults = {"factor": 0.1}

    def factor(self, i: int, lr: float) -> float:
        return float(self.params["factor"])


class LrUp(LrDown):
    name = "lr_up"
    tests = ("learning_rate_too_low",)
    changes = "every param group's learning rate x 10 at every step (on top of the script's schedule)"
    defaults = {"factor": 10.0}


class Warmup(_AroundStep):
    name = "warmup"
    tests = ("learning_rate_too_high",)
    changes = "a linear warm-up of every param group's lr over the first optimizer steps, on top of the schedule"
    defaults = {"steps": 20}

    def factor(self, i: int, lr: float) -> float:
        return min(1.0, (self._steps + 1) / max(1, int(self.params["steps"])))


class HoldLr(_AroundStep):
    name = "hold_lr"
    tests = ("lr_schedule",)
    changes = "each param group steps at its starting lr (initial_lr) whatever the schedule says"

    def setup(self, watch: Any) -> None:
        super().setup(watch)
        if not any(float(lr) > 0 for lr in self._start):
            raise NotApplicable("hold_lr: every param group starts at lr 0 (no starting lr to hold)")

    def new_lr(self, i: int, lr: Any) -> Any:
        return self._start[i] if i < len(self._start) else lr
