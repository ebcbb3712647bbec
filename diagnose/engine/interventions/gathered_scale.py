"""scale_gathered_grad: every gradient multiplied by k = candidates / batch before each optimizer step (tests
distributed_gradient_scale: features gathered from k ranks, the loss reaching the model only through the rank's own
shard, DDP's average dividing the global loss's gradient by k).

A script that gathers with `dist.all_gather` and puts its own shard back computes the global loss on every rank, but
each rank back-propagates it only into its own rows; DDP then averages the k ranks' gradients, so each weight gets 1/k
of the global loss's gradient (OpenGait and insightface multiply the loss by the world size for this reason). Adam
divides the scale out; SGD takes it as the learning rate divided by k. The counterfactual: the gradients the optimizer
is about to apply (its step pre-hook) multiplied by k, as a loss multiplied by the world size would give; k from the
candidates and the batch given to the watch (`observe(..., candidates=k * B)`). Not applicable where the candidates
are not a multiple (2 or more) of the batch by the second `observe`.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, require_optimizer


class ScaleGatheredGrad(Intervention):
    name = "scale_gathered_grad"
    tests = ("distributed_gradient_scale",)
    changes = ("every gradient multiplied by k = candidates / batch before each optimizer step, as a loss multiplied "
               "by the world size would give it")

    def setup(self, watch: Any) -> None:
        require_optimizer(watch, self.name)
        self._k: int | None = None
        self._steps = 0
        self._said = ""

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        b, n = getattr(watch, "batch_size", None), getattr(watch, "candidates", None)
        if b and n and n % b == 0 and n >= 2 * b:
            self._k = n // b
        self._said = f"candidates {n} / batch {b}"
        self.require_acted_by_second_observe(self._k or 0, f"the candidates ({n}) are not a multiple of 2 or more of "
                                                           f"the batch ({b}): no gather to scale for")

    def before_step(self, optimizer: Any) -> None:
        if not self._k:
            return
        with torch.no_grad():
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, float(self._k))
        self._steps += 1
        self.reached[:] = [f"gradients multiplied by {self._k}"]
        self.did[:] = [f"gradients multiplied by {self._k} ({self._said}) before {self._steps} optimizer step(s)"]
