"""log_probabilities: probabilities handed to the cross-entropy as if they were logits replaced by their log (tests
temperature).

`F.cross_entropy` applies its own log-softmax. Fed the output of a softmax (retrieval scores computed for inference
and reused for the loss), it sees inputs in [0, 1]: every row spans at most 1, the loss cannot go far below ln(B)
and the gradient is squeezed through the first softmax's Jacobian, the failure of a logit scale near 1. The log of
a softmax is a log-softmax, whose own log-softmax is itself, so `cross_entropy(log(p))` is exactly the loss the
script meant on the logits before the softmax. While the run lasts the script's cross-entropy calls (the watch's
probes keep theirs) whose 2-d input has every entry in [0, 1] and rows summing to 1 (to 1e-3) get `log(p)`
(clamped at the smallest normal float). Not applicable: no cross-entropy call received probabilities by the
second `observe`.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, wrap_cross_entropy

ROW_SUM_TOL = 1e-3


def are_probabilities(x: Any) -> bool:
    if not (isinstance(x, torch.Tensor) and x.dim() == 2 and x.is_floating_point() and x.shape[1] > 1):
        return False
    with torch.no_grad():
        z = x.detach().float()
        return bool(((z >= 0) & (z <= 1)).all()) and bool(((z.sum(-1) - 1).abs() <= ROW_SUM_TOL).all())


class LogProbabilities(Intervention):
    name = "log_probabilities"
    tests = ("temperature",)
    changes = ("a cross-entropy input that holds probabilities (rows in [0, 1] summing to 1: a softmax already "
               "applied) replaced by its log, the loss the script meant on the logits before the softmax")

    def setup(self, watch: Any) -> None:
        self._replaced = 0
        self._undo = wrap_cross_entropy(self._log)

    def _log(self, input: Any, target: Any) -> Any:
        if not are_probabilities(input):
            return input
        self._replaced += 1
        return input.clamp_min(torch.finfo(input.dtype).tiny).log()

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self.require_acted_by_second_observe(self._replaced, "no cross-entropy call received probabilities (rows in "
                                             "[0, 1] summing to 1) in the first step")
        self.did[:] = [f"took the log of {self._replaced} probability input(s) to the cross-entropy"]

    def close(self) -> None:
        self._undo()
