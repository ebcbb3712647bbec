"""no_weight_decay: every param group steps with weight decay 0, and an L2 / L1 penalty on the weights written into
the loss counts 0 (tests weight_decay_collapse).

Around every optimizer step, like the lr interventions: the pre-hook zeroes each group's ``weight_decay``,
the post-hook gives the user's value back. Weight decay written by hand into the loss (`l2 = sum(p.pow(2).sum() for
p in model.parameters())`, `loss = clip + lam * l2`, as course material shows it) is the same pull toward zero with
no optimizer setting to change: while the run lasts, a `pow`, `square`, `abs` or norm that the script's loss lines
(outside every module's forward, `ops.watch_ops`) take of one of the watched model's parameters gives zeros without
a gradient, so the penalty adds nothing. Not applicable: no param group has weight decay and by the second
`observe` the script took no such penalty.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, require_optimizer
from .ops import Call, watch_ops

PENALTY_OPS = ("pow", "square", "abs", "norm", "linalg_norm", "linalg_vector_norm")


class NoWeightDecay(Intervention):
    name = "no_weight_decay"
    tests = ("weight_decay_collapse",)
    changes = ("every param group's weight decay set to 0 at every step; a penalty on the weights written into the "
               "loss (p.pow(2), p.norm(), p.abs()) taken as 0")

    def setup(self, watch: Any) -> None:
        opt = require_optimizer(watch, self.name)
        self._decayed = any(float(g.get("weight_decay") or 0.0) > 0 for g in opt.param_groups)
        self._params = {id(p) for p in watch.model.parameters()}
        self._saved: list[Any] = []
        self._zeroed = 0
        self._undo_ops = watch_ops({op: self._penalty for op in PENALTY_OPS})

    def _penalty(self, call: Call) -> Any:
        out = call.run()
        x = call.args[0] if call.args else None
        if isinstance(x, torch.nn.Parameter) and id(x) in self._params and isinstance(out, torch.Tensor):
            self._zeroed += 1
            return torch.zeros_like(out).detach()
        return out

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if not self._decayed:
            self.require_acted_by_second_observe(self._zeroed, "no param group has weight decay and the script's "
                                                 "loss took no penalty on the weights in the first step")
        self._say()

    def before_step(self, optimizer: Any) -> None:
        self._saved = [g.get("weight_decay", 0.0) for g in optimizer.param_groups]
        for g in optimizer.param_groups:
            g["weight_decay"] = 0.0

    def after_step(self, optimizer: Any) -> None:
        for g, wd in zip(optimizer.param_groups, self._saved):
            g["weight_decay"] = wd
        self._say()

    def _say(self) -> None:
        self.did[:] = [line for cond, line in (
            (self._decayed and self._saved, f"weight decay {self._saved} -> 0 in every group"),
            (self._zeroed, f"{self._zeroed} penalty term(s) on the weights in the loss taken as 0")) if cond]

    def close(self) -> None:
        self._undo_ops()
