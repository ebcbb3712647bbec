"""eps_default: every param group whose eps is above Adam's default (1e-8) steps with that default (tests
learning_rate_too_low: Adam, AdamW, RMSprop divide by sqrt(v) + eps, and an eps many times the gradients' scale
turns their lr-sized steps into lr * g / eps, a decade or more below the lr; `rules.optimizer.EpsDominatesStep`).

Around every optimizer step, like the lr interventions: the pre-hook sets each such group's ``eps``, the post-hook
gives the user's value back. Not applicable: no param group has an eps above the default.
"""

from __future__ import annotations

from typing import Any

from .base import Intervention, NotApplicable, require_optimizer


class DefaultEps(Intervention):
    name = "eps_default"
    tests = ("learning_rate_too_low",)
    changes = "every param group's eps above `eps` set to `eps` (Adam's default) at every step"
    defaults = {"eps": 1e-8}

    def setup(self, watch: Any) -> None:
        opt = require_optimizer(watch, self.name)
        self._eps = float(self.params["eps"])
        self._groups = [i for i, g in enumerate(opt.param_groups)
                        if isinstance(g.get("eps"), (int, float)) and float(g["eps"]) > self._eps]
        if not self._groups:
            raise NotApplicable(f"eps_default: no param group has an eps above {self._eps:g}")
        self._saved: list[Any] = []

    def before_step(self, optimizer: Any) -> None:
        self._saved = [g.get("eps") for g in optimizer.param_groups]
        for i in self._groups:
            optimizer.param_groups[i]["eps"] = self._eps
        if not self.did:
            self.did.append(f"eps {sorted({self._saved[i] for i in self._groups})} -> {self._eps:g} in "
                            f"{len(self._groups)} of {len(optimizer.param_groups)} param group(s)")

    def after_step(self, optimizer: Any) -> None:
        for g, eps in zip(optimizer.param_groups, self._saved):
            g["eps"] = eps
        if not self.reached and any(g["params"] for i, g in enumerate(optimizer.param_groups) if i in self._groups):
            self.reached.append("an optimizer step ran at the changed eps")
