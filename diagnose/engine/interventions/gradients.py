"""clip_grad: clip the global gradient norm before every optimizer step (tests nonfinite_divergence and
learning_rate_too_high: a step that rewrites the layers is a step with a large gradient).

Runs in the optimizer's step pre-hook, so it acts on the gradients the step will use wherever the script
calls `optimizer.step()` (also inside Lightning or the HF Trainer). Non-finite gradients stay non-finite:
clipping does not hide a NaN (`error_if_nonfinite=False`, the NaN reaches the step and the loss).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, require_optimizer


class ClipGrad(Intervention):
    name = "clip_grad"
    tests = ("nonfinite_divergence", "learning_rate_too_high")
    changes = "global gradient norm clipped to `max_norm` (default 1.0) before every optimizer step"
    defaults = {"max_norm": 1.0}

    def setup(self, watch: Any) -> None:
        require_optimizer(watch, self.name)
        self._clipped, self._steps, self._largest = 0, 0, 0.0

    def before_step(self, optimizer: Any) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return
        norm = float(torch.nn.utils.clip_grad_norm_(params, float(self.params["max_norm"])))
        self._steps += 1
        if norm > float(self.params["max_norm"]):
            self._clipped += 1
        self._largest = max(self._largest, norm) if norm == norm else self._largest
        self.did[:] = [f"clipped {self._clipped} of {self._steps} steps to norm {self.params['max_norm']} "
                       f"(largest raw norm {self._largest:.3g})"]
