"""fp32_master_weights: the optimizer steps fp32 copies of half-precision parameters (tests
nonfinite_divergence when it comes from the precision of the step, and learning_rate_too_low when the updates
round away in the weights' precision: `updates_rounded_away`).

Adam on fp16 weights (e.g. a model loaded in half and trained as it is) divides by sqrt(v) + eps where
eps=1e-8 is 0 in fp16: a parameter whose gradient is 0 gets 0/0 = NaN, and tiny updates vanish under
fp16 rounding. The usual fix is fp32 master weights (mixed precision). Here, around every optimizer step:
the pre-hook swaps each fp16/bf16 parameter's data for its fp32 master copy and upcasts its gradient, so the
step (and the optimizer state it creates) is fp32; the post-hook keeps the stepped fp32 values as the
master and gives the model back their half-precision cast for the next forward. No half-precision
parameter in the optimizer: not applicable.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, NotApplicable, require_optimizer

HALF = (torch.float16, torch.bfloat16)


class Fp32MasterWeights(Intervention):
    name = "fp32_master_weights"
    tests = ("nonfinite_divergence", "learning_rate_too_low")
    changes = "the optimizer steps fp32 master copies of half-precision parameters (mixed precision)"

    def setup(self, watch: Any) -> None:
        opt = require_optimizer(watch, self.name)
        params = [p for g in opt.param_groups for p in g["params"] if p.dtype in HALF]
        if not params:
            raise NotApplicable("fp32_master_weights: no fp16/bf16 parameter in the optimizer")
        self._master = {id(p): p.detach().float().clone() for p in params}
        self._dtype = {id(p): p.dtype for p in params}
        self.did.append(f"{len(params)} half-precision tensors stepped in fp32 "
                        f"({sum(p.numel() for p in params):,} parameters)")

    def before_step(self, optimizer: Any) -> None:
        for g in optimizer.param_groups:
            for p in g["params"]:
                m = self._master.get(id(p))
                if m is None:
                    continue
                grad = p.grad.float() if p.grad is not None else None
                p.data = m
                p.grad = grad

    def after_step(self, optimizer: Any) -> None:
        for g in optimizer.param_groups:
            for p in g["params"]:
                if id(p) in self._master:
                    self._master[id(p)] = p.data
                    p.data = p.data.to(self._dtype[id(p)])
                    p.grad = None
