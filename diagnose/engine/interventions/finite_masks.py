"""finite_masks: an infinity written into a tensor as a mask (`masked_fill(mask, -inf)`, `torch.where(mask, x, -inf)`,
`x[mask] = -inf`) becomes the largest finite value that survives a multiplication by any usual logit scale,
±sqrt(the dtype's max) (tests nonfinite_divergence when the first NaN is an infinite mask).

A -inf logit only gets probability zero, so the loss stays finite, but an infinity that enters a product meets a
zero in its derivative: `masked * scale` with the mask applied before the learned scale gives d/dscale =
sum(grad * masked) = 0 * -inf = NaN at every masked entry, and the optimizer writes the NaN into the scale; a row
masked everywhere gives softmax(all -inf) = NaN. With ±sqrt(max) instead (1.8e19 in float32, 256 in float16) exp()
is still exactly zero, a product with any scale below sqrt(max) stays finite, and a fully masked row gets uniform
weights. In the script's loss lines and inside the model's forwards. A run in which no such fill happens by its
second step: not applicable.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import Intervention
from .ops import Call, watch_ops


def _finite(value: Any, dtype: torch.dtype) -> Any:
    """±sqrt(max) of `dtype` for a Python ±inf (None where `value` is not one)."""
    if isinstance(value, (int, float)) and math.isinf(value) and dtype.is_floating_point:
        return math.copysign(math.sqrt(torch.finfo(dtype).max), value)
    return None


class FiniteMasks(Intervention):
    name = "finite_masks"
    tests = ("nonfinite_divergence",)
    changes = ("an inf written as a mask (masked_fill, where, x[mask] = -inf) becomes +-sqrt(the dtype's max): still "
               "no probability, no inf in a derivative (0 x inf = NaN)")

    def setup(self, watch: Any) -> None:
        self._fills = 0
        # x.masked_fill(mask, v) and x[mask] = v: the value is the third argument of both
        self._undo_ops = watch_ops({"masked_fill": self._fill, "masked_fill_": self._fill, "__setitem__": self._fill,
                                    "where": self._where}, inside_modules=True)

    def _fill(self, call: Call) -> Any:
        if len(call.args) == 3 and isinstance(call.args[0], torch.Tensor):
            value = _finite(call.args[2], call.args[0].dtype)
            if value is not None:
                self._fills += 1
                return call.run(call.args[0], call.args[1], value)
        return call.run()

    def _where(self, call: Call) -> Any:
        if len(call.args) == 3 and not call.kwargs:
            cond, x, y = call.args
            ref = x if isinstance(x, torch.Tensor) else y
            if isinstance(ref, torch.Tensor):
                fx, fy = _finite(x, ref.dtype), _finite(y, ref.dtype)
                if fx is not None or fy is not None:
                    self._fills += 1
                    return call.run(cond, x if fx is None else fx, y if fy is None else fy)
        return call.run()

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self.require_acted_by_second_observe(self._fills, "the script and its model wrote no inf as a mask (masked_fill"
                                             ", where, x[mask] = inf) in the first step")
        if self._fills:
            self.did[:] = [f"{self._fills} inf mask fill(s) written as +-sqrt(max) instead"]
            if not self.reached:
                self.reached.append("an inf mask fill in the run was made finite")

    def close(self) -> None:
        self._undo_ops()
