"""mask_duplicates: take near-duplicate candidates out of each row's negatives (tests false_negatives).

The script computes its own loss, so the mask goes where every contrastive loss ends: while the run lasts
`torch.nn.functional.cross_entropy` (which `nn.CrossEntropyLoss` calls) is wrapped for the script's calls (the
watch's probes compute theirs unmasked), and for a square
logits matrix whose targets are the diagonal, a candidate column whose scores against every row agree with
the positive's column to cosine 0.999 (the contrastive probe's duplicate test, applied to the logits'
columns, i.e. to what the loss sees) is set to -inf in that row, except the positive itself. A row where
more than half the candidates would go is left alone: that is collapse, not duplicates, and masking it
would hand the loss a zero it did not earn. Exact copies (a column or a row identical to every bit: the same
caption, or the same query, given twice) are masked however many there are, unless they are every candidate.
Logits with more candidates than rows (gathered from other ranks, extra negatives) take integer targets that point
at each row's positive: there a candidate is a duplicate when its column equals the positive's column on every row
(to 1e-5 of the largest score; with few rows a cosine over them would match distinct candidates), which is what
two ranks that drew the same batch produce.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import Intervention, wrap_cross_entropy

DUPLICATE_COSINE = 0.999
MAX_MASKED_SHARE = 0.5


def _identical(t: torch.Tensor) -> torch.Tensor:
    """(K, K): rows of `t` equal to every bit (one input given twice yields the same scores)."""
    inverse = torch.unique(t, dim=0, return_inverse=True)[1]
    return inverse[:, None] == inverse[None, :]


def mask_duplicate_candidates(logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Logits with each row's duplicate negatives masked, and how many entries were masked.

    Near-duplicates (columns to cosine 0.999) only where at most half a row would go (more is collapse). Exact
    duplicates (identical columns: the same caption twice; or identical rows: the same query twice, whose
    positives are then each other's) however many, as long as the row keeps one candidate besides its positive:
    a skewed label set can put most of a batch on one caption, and every copy is a false negative in both
    directions (the script's cross-entropy of logits.t() sees the rows as columns). Every candidate identical
    is collapse (zeroed heads), left alone."""
    n, c = logits.shape
    with torch.no_grad():
        z = logits.detach().float()
        cols = F.normalize(z.t(), dim=-1)  # (C, N): candidate j's scores over rows
        near = ((cols @ cols.t()) >= DUPLICATE_COSINE)[:n, :].clone()  # row i: candidates duplicating i's positive
        near.fill_diagonal_(False)
        near &= near.sum(1, keepdim=True) <= MAX_MASKED_SHARE * c
        exact = _identical(z.t())[:n, :] | _identical(z)  # identical columns, or identical rows (n == c here)
        exact.fill_diagonal_(False)
        exact &= exact.sum(1, keepdim=True) < c - 1
        mask = near | exact
    count = int(mask.sum())
    if count == 0:
        return logits, 0
    return logits.masked_fill(mask, float("-inf")), count


TWIN_RTOL = 1e-5
TWINS_MAX = 1 << 24  # rows x rows x candidates compared at once; larger gathered logits are left alone


def mask_twin_candidates(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Rectangular logits with each row's copies of its positive column (target) masked, and how many."""
    n, c = logits.shape
    if n * n * c > TWINS_MAX:
        return logits, 0
    with torch.no_grad():
        z = logits.detach().float()
        t = target.long()
        tol = TWIN_RTOL * float(z.abs().max().clamp_min(1e-30))
        mask = ((z.t()[None, :, :] - z.t()[t][:, None, :]).abs() <= tol).all(dim=-1)  # (n, c)
        mask[torch.arange(n, device=z.device), t] = False
        mask &= mask.sum(1, keepdim=True) <= MAX_MASKED_SHARE * c
    count = int(mask.sum())
    if count == 0:
        return logits, 0
    return logits.masked_fill(mask, float("-inf")), count


def _diagonal_targets(input: torch.Tensor, target: Any) -> bool:
    return (isinstance(target, torch.Tensor) and target.dtype in (torch.int64, torch.int32)
            and target.shape == (input.shape[0],)
            and bool((target == torch.arange(len(target), device=target.device)).all()))


def _gathered_targets(input: torch.Tensor, target: Any) -> bool:
    return (isinstance(target, torch.Tensor) and target.dtype in (torch.int64, torch.int32)
            and target.shape == (input.shape[0],) and input.shape[1] > input.shape[0]
            and bool(((target >= 0) & (target < input.shape[1])).all()))


class MaskDuplicates(Intervention):
    name = "mask_duplicates"
    tests = ("false_negatives",)
    changes = ("near-duplicate candidates masked out of each row's negatives in every cross-entropy over square "
               "logits with diagonal targets, and copies of the positive in logits with more candidates than rows")

    def setup(self, watch: Any) -> None:
        self._masked = 0
        self._undo = wrap_cross_entropy(self._mask)

    def _mask(self, input: Any, target: Any) -> Any:
        if isinstance(input, torch.Tensor) and input.dim() == 2:
            k = 0
            if input.shape[0] == input.shape[1] and _diagonal_targets(input, target):
                input, k = mask_duplicate_candidates(input)
            elif _gathered_targets(input, target):
                input, k = mask_twin_candidates(input, target)
            self._masked += k
        return input

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self.did[:] = [f"masked {self._masked} duplicate candidate entries so far"]

    def close(self) -> None:
        self._undo()
