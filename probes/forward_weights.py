"""Does the forward compute with the parameters the optimizer steps?

Probe ``forward_weights``:
  target = module name of up to `MODULES` ``nn.Linear`` layers with a trainable weight (the first in module
      order), expensive steps: stale_output, ||y - y_now|| / ||y_now||, where y is the layer's output in the
      forward and y_now its input through the layer's current weight and bias, cast to the output's dtype as
      autocast casts them, with autocast off. 0 up to rounding where the forward used the parameters (the same
      operation on the same tensors); where it used copies taken before the optimizer moved them, the share of
      the output those updates changed.
  target ``model``, at each observe after an optimizer step: autocast_at_step, 1 if an autocast region was open on
      the parameters' device when the optimizer stepped since the last observe (its step pre-hook), else 0.

Why: inside one autocast region, the first use of a leaf parameter that requires grad caches its low-precision
cast and every later use in the region reuses it; the cache is cleared only when the outermost region exits.
A region opened once around the whole loop (forward, backward and `optimizer.step()` inside it) keeps serving
the casts of the first step's weights: the optimizer moves the fp32 parameters, gradients still reach them, and
the loss is computed from weights that never change. Nothing in the parameters, gradients or updates shows it;
the forward's own output against the current weights does. Any other copy of the weights held past a step (a
transposed weight cached at init, a stale replica) reads the same.

Cost: a forward hook on one or two layers (returns at once on the other steps), one matmul of that layer on the
expensive steps, and a flag read per optimizer step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ._scope import is_compiled
from .base import Observation, Probe, module_label

if TYPE_CHECKING:
    from .session import ProbeSession

MODULES = 2


def param_device_type(model: nn.Module) -> str:
    """The device type of the model's first trainable parameter (cpu where it has none)."""
    return next((p.device.type for p in model.parameters() if p.requires_grad), "cpu")


def autocast_open(device_type: str) -> bool:
    """Whether an autocast region is open for `device_type` now (False where torch cannot say)."""
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except (TypeError, RuntimeError):  # a device type autocast does not know
        return False


class ForwardWeights(Probe):
    name = "forward_weights"

    def setup(self, session: "ProbeSession") -> None:
        self._at_step: int | None = None  # 1 if a region was open at a step since the last observe
        # layers inside a compiled module are left alone (dynamo would trace the hook; its graphs bypass it anyway)
        compiled = [f"{n}." if n else "" for n, m in session.model.named_modules() if is_compiled(m)]
        layers = [(n, m) for n, m in session.model.named_modules()
                  if type(m) is nn.Linear and m.weight.requires_grad and m.weight.is_floating_point()
                  and not any(n.startswith(c) for c in compiled)][:MODULES]
        for name, layer in layers:
            session.hooks.forward_hook(layer, self._hook(session, module_label(name)))
        self._device = param_device_type(session.model)
        if session.optimizer is not None and layers:
            session.hooks.optimizer_pre_hook(session.optimizer, self._pre_step)

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        self._at_step = max(self._at_step or 0, int(autocast_open(self._device)))

    def _hook(self, session: "ProbeSession", target: str):
        def hook(module: nn.Linear, args: tuple, output: object) -> None:
            if not (args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor)):
                return
            if not session.hook_due(expensive=True):
                return
            with session.guard(self.name), torch.no_grad():
                session.buffer.defer(self.name, target, "stale_output", _stale(module, args[0], output))

        return hook

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        if self._at_step is not None:
            session.buffer.add(obs.step, self.name, "model", "autocast_at_step", float(self._at_step))
            self._at_step = None


def _stale(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||y - layer_now(x)|| / ||layer_now(x)||, the layer recomputed from its current parameters in y's dtype."""
    dt = y.dtype
    bias = None if layer.bias is None else layer.bias.detach().to(dt)
    with torch.autocast(device_type=x.device.type, enabled=False):
        now = F.linear(x.detach().to(dt), layer.weight.detach().to(dt), bias).float()
    return torch.linalg.vector_norm(y.detach().float() - now) / torch.linalg.vector_norm(now).clamp_min(1e-30)
