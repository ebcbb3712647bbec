"""no_weight_decay: every param group steps with weight decay 0 (tests weight_decay_collapse).

Around every optimizer step, like the lr interventions: the pre-hook zeroes each group's ``weight_decay``,
the post-hook gives the user's value back. A run whose groups already have no weight decay: not applicable.
"""

from __future__ import annotations

from typing import Any

from .base import Intervention, NotApplicable, require_optimizer


class NoWeightDecay(Intervention):
    name = "no_weight_decay"
    tests = ("weight_decay_collapse",)
    changes = "every param group's weight decay set to 0 at every step"

    def setup(self, watch: Any) -> None:
        opt = require_optimizer(watch, self.name)
        if not any(float(g.get("weight_decay") or 0.0) > 0 for g in opt.param_groups):
            raise NotApplicable("no_weight_decay: no param group has weight decay")
        self._saved: list[Any] = []

    def before_step(self, optimizer: Any) -> None:
        self._saved = [g.get("weight_decay", 0.0) for g in optimizer.param_groups]
        for g in optimizer.param_groups:
            g["weight_decay"] = 0.0
        if not self.did:
            self.did.append(f"weight decay {self._saved} -> 0 in every group")

    def after_step(self, optimizer: Any) -> None:
        for g, wd in zip(optimizer.param_groups, self._saved):
            g["weight_decay"] = wd
