"""rescale_logits: the contrastive logits the loss receives carried at CLIP's scale (tests temperature).

`fix_temperature` holds a parameter; a temperature written as a constant (`img @ txt.t()` with no scale, `* 0.07`
where `/ 0.07` was meant, a `scale=0.05` that multiplies) has none to hold. The counterfactual is the same either
way: would this run learn if its logits carried the scale CLIP starts with? So while the run lasts
`torch.nn.functional.cross_entropy` (which `nn.CrossEntropyLoss` and Hugging Face's CLIP loss call) is wrapped for
the script's own calls (the watch's probes compute theirs on the logits as they are), and a 2-d input shaped like
the logits the script hands to `observe` (or their transpose) whose targets point at each row's positive (the
diagonal, or a gathered row's own column) is multiplied by target / measured, where the measured scale is read off
each step's own tensors as `fix_temperature` reads it (the logits' diagonal over the dot products of the paired
embeddings). Its first step runs unchanged (nothing is measured before the first `observe`). Not applicable: no
logits and paired embeddings to measure the scale from, logits that are not a scale times the embeddings' dot
products (a softmax between them), logits already at the target scale (within 5%), or no cross-entropy call that
received such logits (a loss written with `log_softmax` by hand) by the second `observe`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import Intervention, NotApplicable, seen_logits, wrap_cross_entropy
from .logits import _diagonal_targets, _gathered_targets
from .temperature import MATCH_REL, TARGET_SCALE, measured_scale

LINEAR_RESIDUAL = 0.05  # logits within 5% (relative, largest entry) of scale x dot products: a scaled similarity


def linear_residual(logits: torch.Tensor, emb: dict[str, Any], scale: float) -> float:
    """max |logits - scale * img @ txt.T| / max |scale * img @ txt.T| over the pairs both hold."""
    img, txt = emb["image"], emb["text"]
    n, m = min(logits.shape[0], img.shape[0]), min(logits.shape[1], txt.shape[0])
    with torch.no_grad():
        want = scale * (img[:n].float() @ txt[:m].float().t())
        return float((logits[:n, :m].float() - want).abs().max() / want.abs().max().clamp_min(1e-12))


class RescaleLogits(Intervention):
    name = "rescale_logits"
    tests = ("temperature",)
    changes = ("the contrastive logits rescaled inside every cross-entropy to CLIP's scale 14.29 (the scale they "
               "carry read each step off the logits and the paired embeddings): a temperature with no parameter")
    defaults = {"scale": TARGET_SCALE}

    def setup(self, watch: Any) -> None:
        self._factor: float | None = None
        self._shapes: set[tuple[int, int]] = set()
        self._rescaled = 0
        self._observed = 0
        self._undo = wrap_cross_entropy(self._rescale)

    def _rescale(self, input: Any, target: Any) -> Any:
        if not self._applies(input, target):
            return input
        self._rescaled += 1
        return input * self._factor

    def _applies(self, input: Any, target: Any) -> bool:
        return (self._factor is not None and isinstance(input, torch.Tensor) and input.dim() == 2
                and input.is_floating_point() and tuple(input.shape) in self._shapes
                and (_diagonal_targets(input, target) or _gathered_targets(input, target)))

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self._observed += 1
        scale, target = measured_scale(seen), float(self.params["scale"])
        if self._factor is None:
            self._first(seen, scale, target)
        elif self._observed == 2 and self._rescaled == 0:
            raise NotApplicable(f"{self.name}: no cross_entropy call received logits of shape "
                                f"{sorted(self._shapes)[0]} with targets on each row's positive: the loss is "
                                "computed another way (log_softmax by hand), so the scale cannot be set there")
        if scale is not None and math.isfinite(scale) and scale > 0:
            self._factor = target / scale
        self.did[1:] = [f"rescaled {self._rescaled} cross-entropy inputs so far (last factor {self._factor:.4g})"]

    def _first(self, seen: dict[str, Any], scale: float | None, target: float) -> None:
        if scale is None:
            raise NotApplicable(f"{self.name}: the scale the logits carry cannot be read (it needs `logits=` and "
                                "paired `embeddings={'image', 'text'}` in observe)")
        if not (math.isfinite(scale) and scale > 0):
            raise NotApplicable(f"{self.name}: the logits are not a positive scale times the embeddings' dot "
                                f"products (their diagonal over the dot products: {scale:.3g})")
        logits = seen_logits(seen)
        residual = linear_residual(logits, seen["embeddings"], scale)
        if not residual <= LINEAR_RESIDUAL:
            raise NotApplicable(f"{self.name}: the logits are not a scale times the embeddings' dot products "
                                f"(relative residual {residual:.3g} at scale {scale:.3g}): something between them "
                                "(a softmax, a bias) that a scale cannot set")
        if abs(scale - target) <= MATCH_REL * target:
            raise NotApplicable(f"{self.name}: the logits already carry scale {scale:.4g} (target {target:.4g})")
        rows, cols = logits.shape
        self._shapes = {(rows, cols), (cols, rows)}
        self.did.append(f"logits measured at scale {scale:.4g} on step 1; every later cross-entropy over them "
                        f"rescaled to {target:.4g}")

    def close(self) -> None:
        self._undo()
