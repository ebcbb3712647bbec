"""diagonal_targets: the contrastive cross-entropy given the targets that point at each row's own pair (tests
wrong_targets).

In an image-text batch the positive of row i is column i (with logits gathered from W ranks, column rank * B + i).
Targets copied from elsewhere break that: MoCo's `zeros(N)` (there the positive is column 0 of [pos, negatives]),
the dataset's class ids, targets without the rank offset after a gather, soft targets built from the model's own
similarities. The counterfactual: would the run learn if every row's target were its own pair? While the run lasts
the script's cross-entropy calls (the watch's probes keep theirs) over a 2-d input shaped like the logits handed to
`observe` (or their transpose) get the pair targets in place of theirs: `arange(B)` for square logits (integer
targets, or a float target matrix of the logits' shape), `rank * B + arange(B)` for logits with W times more columns
than rows when torch.distributed runs with world size W. Outside torch.distributed, rectangular logits (a rank's
rows against a gather written by hand, a micro-batch against a bank of earlier ones) with as many rows or columns as
those get the pairs the loss lines' own operations locate (`pair_layout`: the rows a block of a batch as wide as the
columns, or the one block of the candidates carrying the step's gradient). The logits' shape is known from the
batch size given to the watch (B x B), else from the first `observe` (then the first step runs unchanged).

A cross-entropy written by hand with soft targets, `-(targets * log_softmax(logits)).sum(1)` (the OpenAI-CLIP tutorial's
targets built from the model's own image-image and text-text similarities), calls no cross-entropy: there the script's
product of a float matrix with the log-softmax of square logits (`log_softmax` along the rows, or `log` of their
`softmax`), computed in the loss lines outside every module's forward (`ops.watch_ops`), gets each row's own pair as
its target, `eye(B)` times the targets' mean row sum (so a minus sign or a weight the script put on the targets stays;
the columns of the transposed soft targets do not sum to 1 each, their mean does).
Not applicable: no logits handed to `observe`, or by the second `observe` no cross-entropy call over them (or product
with their log-softmax) had targets other than the pairs, or rectangular logits' operations did not say where each
row's pair is (candidates of one forward laid out by the data, such as [positive, hard negative] interleaved).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, NotApplicable, declared_logits_shapes, seen_logits, wrap_cross_entropy
from .ops import Call, watch_ops
from .pair_layout import handlers as layout_handlers
from .pair_layout import located_pairs


def pair_targets(input: torch.Tensor) -> torch.Tensor | None:
    """Each row's own pair as a class index, or None when the logits' layout does not say where it is."""
    n, c = input.shape
    offset = 0
    if c != n:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or c != n * dist.get_world_size():
            return None
        offset = dist.get_rank() * n
    return torch.arange(n, device=input.device) + offset


class DiagonalTargets(Intervention):
    name = "diagonal_targets"
    tests = ("wrong_targets",)
    changes = ("the targets of every cross-entropy over the contrastive logits replaced by each row's own pair "
               "(arange(B); rank * B + arange(B) on gathered logits; on rectangular logits outside torch.distributed "
               "the block the loss lines' operations locate)")

    def setup(self, watch: Any) -> None:
        # the batch size the watch was given says the logits' shape before the first step; else the first observe
        self._shapes = declared_logits_shapes(watch)
        self._replaced = self._calls = self._observed = self._located = self._unlocated = 0
        self._undo = wrap_cross_entropy(targets=self._target)
        self._layout = layout_handlers()
        self._undo_ops = watch_ops({**self._layout, "log_softmax": self._mark_log_probs,
                                    "softmax": self._mark_log_probs, "log": self._mark_log_probs,
                                    "mul": self._soft_targets})

    def _mark_log_probs(self, call: Call) -> Any:
        """The row-wise log-softmax of square logits (or the log of their softmax) remembers what it is."""
        out = call.run()
        x = call.args[0] if call.args else None
        if not (isinstance(out, torch.Tensor) and out.dim() == 2 and tuple(out.shape) in self._shapes
                and out.shape[0] == out.shape[1]):
            return out
        name = getattr(call.func, "__name__", "")
        if name == "log":
            if getattr(x, "_dg_probs", False):
                out._dg_log_probs = True
            return out
        dim = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else None)
        if dim in (-1, 1):
            setattr(out, "_dg_log_probs" if name == "log_softmax" else "_dg_probs", True)
        return out

    def _soft_targets(self, call: Call) -> Any:
        """targets * log_softmax(logits): each row's target its own pair, the targets' mean row sum kept."""
        if len(call.args) != 2 or call.kwargs:
            return call.run()
        a, b = call.args
        for log_probs, soft in ((a, b), (b, a)):
            if (getattr(log_probs, "_dg_log_probs", False) and isinstance(soft, torch.Tensor)
                    and soft.is_floating_point() and soft.shape == log_probs.shape):
                self._calls += 1
                n = soft.shape[0]
                want = torch.eye(n, dtype=soft.dtype, device=soft.device) * soft.detach().sum(-1).mean()
                if torch.equal(soft.detach(), want):
                    break
                self._replaced += 1
                return call.run(*(want if x is soft else x for x in call.args))
        return self._layout["mul"](call)

    def _target(self, input: Any, target: Any) -> Any:
        if not (isinstance(input, torch.Tensor) and input.dim() == 2):
            return target
        shaped = tuple(input.shape) in self._shapes
        want = pair_targets(input) if shaped else None
        if want is None and input.shape[0] != input.shape[1] and (shaped or self._near_shapes(input)):
            want = located_pairs(input)  # rectangular logits outside torch.distributed: the loss lines say where
            self._located += want is not None
            self._unlocated += want is None and shaped  # the contrastive logits, their pairs not located
        if not shaped and want is None:
            return target
        self._calls += 1
        if want is None or not isinstance(target, torch.Tensor):
            return target
        if target.dtype in (torch.int64, torch.int32) and target.shape == want.shape:
            if bool((target == want).all()):
                return target
        elif not (target.is_floating_point() and target.shape == input.shape):
            return target
        self._replaced += 1
        return want

    def _near_shapes(self, input: torch.Tensor) -> bool:
        """Rows or columns as many as the contrastive logits' (a block of them, or more candidates)."""
        return any(d in shape for d in input.shape for shape in self._shapes)

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self._observed += 1
        logits = seen_logits(seen)
        if self._observed == 1:
            if not (isinstance(logits, torch.Tensor) and logits.dim() == 2):
                raise NotApplicable(f"{self.name}: no 2-d logits handed to observe (logits=): nothing says which "
                                    "cross-entropy is the contrastive one")
            rows, cols = logits.shape
            self._shapes |= {(rows, cols), (cols, rows)}
        elif self._observed == 2 and self._replaced == 0:
            why = ("already take each row's own pair" if self._calls > self._unlocated else
                   "have rectangular logits whose layout does not say where each row's pair is (no rank offset of "
                   "torch.distributed, no block of the batch, no single block of candidates carrying the gradient)"
                   if self._unlocated else f"none received logits of shape {sorted(self._shapes)[0]}")
            raise NotApplicable(f"{self.name}: the script's cross-entropy calls (and products of soft targets with "
                                f"the logits' log-softmax) {why}")
        located = (f" (on {self._located} call(s) over rectangular logits the pairs located from the loss lines)"
                   if self._located else "")
        self.did[:] = [f"replaced the targets of {self._replaced} cross-entropy call(s) by each row's own "
                       f"pair{located}"]

    def close(self) -> None:
        self._undo()
        self._undo_ops()
