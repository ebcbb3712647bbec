"""scaler_step: a plain `optimizer.step()` after `scaler.scale(loss).backward()` stepped as `scaler.step(optimizer);
scaler.update()` would (tests nonfinite_divergence).

A GradScaler multiplies the loss (2**16 at first) so that fp16 gradients do not underflow; `scaler.step` divides
the gradients back, skips a step whose gradients hold inf/NaN and lets `update` lower the scale. A script that
scales the loss but keeps its old `optimizer.step()` applies gradients 65536x too large and never skips an overflow
(SGD diverges at once; Adam hides most of it). For the run `GradScaler.scale` records the scalers in use, and an
optimizer step pre-hook does what `scaler.step` would have done for a scaler that scaled this step's loss and was not
asked to unscale (its stage for this optimizer still "ready"): `unscale_`, then, when it found inf/NaN, every
gradient set to None so that the optimizer skips the step; the post-hook calls `update`. Not applicable: no
GradScaler scaled a loss by the first `observe`, or the script already steps through `scaler.step` (its gradients
were unscaled before the optimizer ran).
"""

from __future__ import annotations

import weakref
from typing import Any

from .base import Intervention, NotApplicable, require_optimizer


class ScalerStep(Intervention):
    name = "scaler_step"
    tests = ("nonfinite_divergence",)
    changes = ("a plain optimizer.step() after scaler.scale(loss).backward() done as scaler.step(); scaler.update(): "
               "gradients unscaled, a step with inf/NaN gradients skipped, the scale updated")

    def setup(self, watch: Any) -> None:
        from torch.amp.grad_scaler import GradScaler

        require_optimizer(watch, self.name)
        self._scalers: weakref.WeakSet = weakref.WeakSet()
        self._orig = GradScaler.scale
        self._cls = GradScaler
        self._unscaled = self._skipped = self._already = 0
        self._pending: list[Any] = []
        orig, scalers = self._orig, self._scalers

        def scale(scaler, outputs):
            scalers.add(scaler)
            return orig(scaler, outputs)

        GradScaler.scale = scale

    def _ours(self, optimizer: Any) -> list[Any]:
        """Scalers that scaled a loss and have not been asked to unscale this optimizer's gradients."""
        from torch.amp.grad_scaler import OptState

        out = []
        for s in list(self._scalers):
            if not s.is_enabled() or s._scale is None:
                continue
            stage = s._per_optimizer_states[id(optimizer)]["stage"]
            if stage is OptState.READY:
                out.append(s)
            else:
                self._already += 1
        return out

    def before_step(self, optimizer: Any) -> None:
        for scaler in self._ours(optimizer):
            scaler.unscale_(optimizer)
            found = sum(float(v) for v in scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values())
            if found:
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        p.grad = None  # the optimizer skips a parameter without a gradient: the step scaler.step skips
                self._skipped += 1
            self._unscaled += 1
            self._pending.append(scaler)

    def after_step(self, optimizer: Any) -> None:
        for scaler in self._pending:
            scaler.update()
        self._pending.clear()
        if self._unscaled:
            self.did[:] = [f"unscaled the gradients of {self._unscaled} step(s) with the GradScaler that scaled the "
                           f"loss; {self._skipped} step(s) with inf/NaN gradients skipped, the scale updated"]

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if not self._scalers:
            raise NotApplicable(f"{self.name}: no GradScaler scaled a loss before the first observe")
        if self._already and not self._unscaled:
            raise NotApplicable(f"{self.name}: the script steps through scaler.step (the gradients were unscaled "
                                "before the optimizer ran)")

    def close(self) -> None:
        self._cls.scale = self._orig
