"""wide_exp: an exponential in the script's loss lines that overflows (or underflows) its dtype is computed in
float64 (tests nonfinite_divergence when the first inf is an exp of similarities over a small temperature).

A contrastive loss written from its formula, ``exp(sim / tau)`` summed into a partition function and divided into
the positive's, overflows float32 above exp(88.7): at tau = 0.01 any cosine above 0.887, which near-parallel
embeddings of a fresh model reach at step 0. The partition function is inf, -log(pos / inf) is inf, the backward
pass gives NaN and the first optimizer step writes it into every weight. The library versions compute the same loss
as a logsumexp, shifted by the row maximum. The counterfactual, through the script's own operations
(`ops.watch_ops`, outside every module's forward): every ``exp`` whose argument exceeds the log of its dtype's
largest number divided by the tensor's element count (each term small enough that a sum of all of them, a partition
function, fits: 81.8 for 1024 float32 terms), or falls below the log of its smallest normal one (under exp(-87.3)
float32 keeps ever fewer bits and from exp(-103.3) gives 0: a positive's term at cosine -1 over tau 0.01 nears it,
and -log(0) is inf), is computed in float64 (exponents within about +-708), and its result stays float64, so the
sums, ratios and logs the script takes of it stay finite and the gradient flows back through the cast; nothing else
changes. A run in which no exp overflows is unchanged, and the ablation then reads it as not applicable.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import Intervention
from .ops import Call, watch_ops


class WideExp(Intervention):
    name = "wide_exp"
    tests = ("nonfinite_divergence",)
    changes = ("an exp in the loss lines whose terms, or their sum, would leave its dtype's range (exp(sim / tau) "
               "at a small tau) computed in float64, its result kept in float64")

    def setup(self, watch: Any) -> None:
        self._widened = 0
        self._largest = -math.inf
        self._undo_ops = watch_ops({"exp": self._exp})

    def _exp(self, call: Call) -> Any:
        x = call.args[0] if call.args else call.kwargs.get("input")
        if (len(call.args) == 1 and not call.kwargs and isinstance(x, torch.Tensor) and x.is_floating_point()
                and x.dtype != torch.float64 and x.numel()):
            top, bottom = (float(v) for v in x.detach().aminmax()[::-1])
            info = torch.finfo(x.dtype)
            # a sum over the tensor's terms (a partition function) must fit too: each term under max / numel
            if top > math.log(info.max / x.numel()) or bottom < math.log(info.tiny):
                self._widened += 1
                self._largest = max(self._largest, abs(top), abs(bottom))
                self.reached[:] = [f"exp of arguments up to +-{self._largest:.4g} computed in float64"]
                return torch.exp(x.double())
        return call.run()

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self.did[:] = ([f"{self._widened} exp call(s) that overflow or underflow their dtype computed in float64 "
                        f"(largest argument +-{self._largest:.4g})"] if self._widened
                       else ["no exp in the loss lines overflowed its dtype"])

    def close(self) -> None:
        self._undo_ops()
