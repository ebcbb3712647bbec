"""guard_zero_division: a division by zero in the script or its model gives 0 instead of NaN or inf (tests
nonfinite_divergence when the first NaN is a 0/0).

A masked mean pooling divides the summed token embeddings by the number of tokens; a caption with no token (an
empty alt-text, a row filtered to nothing) makes it 0/0 = NaN, the NaN reaches the loss and, through the first
optimizer step, every weight: the run is NaN from the first batch that holds such a row (sentence-transformers
clamps that count at 1e-9 for this reason). The same with `x / x.norm(dim=-1, keepdim=True)` on an all-zero row. The
counterfactual: while the run lasts, every division the script or its model computes (`a / b`, `torch.div`; the
watch's probes keep theirs) by a tensor holding exact zeros divides by 1 at those entries instead (0/0 -> 0; x/0 ->
x). `F.normalize` divides by the norm clamped at `eps` (1e-12 by default), which rounds to 0 in float16: a zero row
is 0/0 there too (pytorch#32137), so a normalize whose eps is 0 in the input's dtype runs with the dtype's smallest
normal number instead (a zero row then normalises to zeros, as in float32). Divisions by a Python number are left
alone. A run in which no such division happens is unchanged, and the
ablation then reads it as not applicable (the fix run ends at the baseline's loss to every digit): a batch without an
empty row can come first, so the fix cannot decide that from the first steps.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention
from .ops import Call, watch_ops


class GuardZeroDivision(Intervention):
    name = "guard_zero_division"
    tests = ("nonfinite_divergence",)
    changes = ("divisions by a tensor holding exact zeros (a masked mean over an empty mask: 0/0) divide by 1 at "
               "those entries, in the script and inside the model; F.normalize with an eps that is 0 in the input's "
               "dtype (float16) clamps at the dtype's smallest normal number")

    def setup(self, watch: Any) -> None:
        self._divisions = self._entries = self._normalize = 0
        self._undo_ops = watch_ops({"div": self._div, "normalize": self._norm}, inside_modules=True)

    def _norm(self, call: Call) -> Any:
        """`F.normalize(x, p, dim, eps)` with eps raised to the dtype's smallest normal where it rounds to 0 there."""
        x = call.args[0] if call.args else call.kwargs.get("input")
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            return call.run()
        kwargs = dict(call.kwargs)
        eps = kwargs.get("eps", call.args[3] if len(call.args) > 3 else 1e-12)
        if float(torch.tensor(eps, dtype=x.dtype)) != 0.0:
            return call.run()
        self._normalize += 1
        kwargs["eps"] = torch.finfo(x.dtype).tiny
        return call.func(*call.args[:3], **kwargs)

    def _div(self, call: Call) -> Any:
        if len(call.args) == 2 and not call.kwargs and getattr(call.func, "__name__", "") != "__rtruediv__":
            num, den = call.args
            if isinstance(den, torch.Tensor) and isinstance(num, torch.Tensor) and num.is_floating_point():
                zero = den == 0
                if bool(zero.any()):
                    self._divisions += 1
                    self._entries += int(zero.sum())
                    return call.run(num, torch.where(zero, torch.ones_like(den), den))
        return call.run()

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self.did[:] = [f"{self._divisions} division(s) by a tensor with zeros divided by 1 at {self._entries} "
                       "entries"] + ([f"{self._normalize} F.normalize call(s) with an eps that is 0 in their dtype "
                                      "clamped at its smallest normal"] if self._normalize else [])

    def close(self) -> None:
        self._undo_ops()
