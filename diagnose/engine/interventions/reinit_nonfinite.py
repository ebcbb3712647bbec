"""reinit_nonfinite: parameters holding NaN or Inf when the watch opens, before any step, redrawn as a fresh model
would have them (`reinit_constant.redraw`: their module's own init, a norm gain ones, a bare tensor of 2 or more
dimensions as nn.Linear's weight, a bias or scalar zero) (tests nonfinite_divergence).

A parameter left uninitialised (a model built on the meta device and materialised with `to_empty()`, its init
covering only some module types; `torch.empty` never filled; under deterministic algorithms that memory is NaN) makes
every output it reaches non-finite from the first step, and the first update spreads it to every parameter. The
fix gives those tensors finite values and changes nothing else; a run that goes non-finite later, from finite
weights, is not this (not applicable).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, NotApplicable
from .reinit_constant import redraw


def nonfinite_parameters(model: Any) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in model.named_parameters()
            if p.is_floating_point() and not bool(torch.isfinite(p.detach()).all())]


class ReinitNonfinite(Intervention):
    name = "reinit_nonfinite"
    tests = ("nonfinite_divergence",)
    changes = ("parameters holding NaN/Inf when the watch opens (left uninitialised) redrawn as a fresh model has "
               "them (their module's init; a bare tensor as nn.Linear's weight, a bias zero) before the first step")

    def setup(self, watch: Any) -> None:
        hit = nonfinite_parameters(watch.model)
        if not hit:
            raise NotApplicable("reinit_nonfinite: every parameter is finite when the watch opens")
        self.did.append(redraw(watch.model, hit))
        self.reached.append("non-finite parameters replaced before the first step")
