"""unscale_before_clip: gradients a GradScaler scaled are unscaled before they are clipped (tests
learning_rate_too_low).

`scaler.scale(loss).backward()` leaves every gradient multiplied by the loss scale (2**16 at first). A clip to
`max_norm` run on those gradients before `scaler.unscale_(optimizer)` clips their scaled norm, and `scaler.step`
then divides by the scale: the step applies a gradient of norm `max_norm / scale` whatever the true one was (PyTorch's
AMP notes: unscale first, then clip). For the run, `GradScaler.scale` records the scalers in use and
`torch.nn.utils.clip_grad_norm_` / `clip_grad_value_` first call `unscale_` on the watched optimizer for a scaler
that scaled a loss and has not unscaled it yet (its stage for that optimizer still "ready"); `scaler.step` then
skips its own unscale, as after the documented order. Not applicable: no GradScaler scaled a loss before the first
`observe`, no clip ran before it, or the script already unscales before it clips.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from .base import Intervention, NotApplicable, require_optimizer

_CLIPS = ("clip_grad_norm_", "clip_grad_value_")


class UnscaleBeforeClip(Intervention):
    name = "unscale_before_clip"
    tests = ("learning_rate_too_low",)
    answers = ("update_only_rescales",)
    changes = ("gradients scaled by a GradScaler unscaled (scaler.unscale_(optimizer)) before clip_grad_norm_ / "
               "clip_grad_value_ clips them")

    def setup(self, watch: Any) -> None:
        from torch.amp.grad_scaler import GradScaler

        self._optimizer = require_optimizer(watch, self.name)
        self._scalers: weakref.WeakSet = weakref.WeakSet()
        self._cls, self._orig_scale = GradScaler, GradScaler.scale
        self._clips = {name: getattr(torch.nn.utils, name) for name in _CLIPS}
        self._unscaled = self._clipped = self._already = 0
        scalers, orig = self._scalers, self._orig_scale

        def scale(scaler, outputs):
            scalers.add(scaler)
            return orig(scaler, outputs)

        GradScaler.scale = scale
        for name, fn in self._clips.items():
            setattr(torch.nn.utils, name, self._wrapped(fn))

    def _wrapped(self, clip: Any) -> Any:
        def clip_unscaled(*args: Any, **kwargs: Any) -> Any:
            self._unscale()
            return clip(*args, **kwargs)

        return clip_unscaled

    def _unscale(self) -> None:
        from torch.amp.grad_scaler import OptState

        self._clipped += 1
        for scaler in list(self._scalers):
            if not scaler.is_enabled() or scaler._scale is None:
                continue
            if scaler._per_optimizer_states[id(self._optimizer)]["stage"] is OptState.READY:
                scaler.unscale_(self._optimizer)
                self._unscaled += 1
                self.did[:] = [f"unscaled the gradients before {self._unscaled} clip(s) with the GradScaler that "
                               "scaled the loss"]
                self.reached[:] = [f"{self._unscaled} clip(s) ran on unscaled gradients"]
            else:
                self._already += 1

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if not self._scalers:
            raise NotApplicable(f"{self.name}: no GradScaler scaled a loss before the first observe")
        if not self._clipped:
            raise NotApplicable(f"{self.name}: no clip_grad_norm_ / clip_grad_value_ ran before the first observe")
        if self._already and not self._unscaled:
            raise NotApplicable(f"{self.name}: the script unscales the gradients before it clips them")

    def close(self) -> None:
        self._cls.scale = self._orig_scale
        for name, fn in self._clips.items():
            setattr(torch.nn.utils, name, fn)
