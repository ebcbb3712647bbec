"""fix_temperature: hold the logit scale at the CLIP value (1/0.07 = 14.29) and stop training it.

Tests `temperature`. The parameter is found by the logits it scales: at the first `observe` the scale the
logits actually carry is read off the step's own tensors (the diagonal of the logits over the dot
products of the paired, normalised embeddings) and matched against the candidate scalar parameters under
the four conventions in use (the scale itself, exp of it as in open_clip and transformers' CLIP, a
temperature the logits are divided by, exp(-p)). Without embeddings to read it from, a scalar parameter
named like a temperature is taken with its name's convention (``logit_scale``: log space, as open_clip;
``temperature``/``tau``: divided by). No scalar trainable parameter: not applicable. A held parameter the
logits do not follow (on the next step they carry the same scale as before, not the target: a clamp or a
constant between the parameter and the logits, which no parameter's convention reproduced on step 1) is not
applicable either, rather than a run that changed nothing.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import torch

from .base import Intervention, NotApplicable, seen_logits, trainable_named

TARGET_SCALE = 1 / 0.07  # CLIP's initial logit scale (Radford et al. 2021; open_clip's default)
NAME = re.compile(r"(logit_?scale|temp|tau)", re.IGNORECASE)
MATCH_REL = 0.05  # a convention matches when it reproduces the measured scale within 5%

# convention -> (scale from the parameter, parameter for a scale)
CONVENTIONS: dict[str, tuple[Callable[[float], float], Callable[[float], float]]] = {
    "log scale (logits x exp(p))": (math.exp, math.log),
    "scale (logits x p)": (lambda p: p, lambda s: s),
    "temperature (logits / p)": (lambda p: 1 / p if p else math.inf, lambda s: 1 / s),
    "log temperature (logits / exp(p))": (lambda p: math.exp(-p), lambda s: -math.log(s)),
}


def measured_scale(seen: dict[str, Any]) -> float | None:
    """The scale the step's logits carry: median of logits[i, i] / <image_i, text_i> over the batch."""
    logits, emb = seen_logits(seen), seen.get("embeddings") or {}
    img, txt = emb.get("image"), emb.get("text")
    if not all(isinstance(t, torch.Tensor) for t in (logits, img, txt)) or logits.dim() != 2:
        return None
    n = min(logits.shape[0], logits.shape[1], img.shape[0], txt.shape[0])
    with torch.no_grad():
        dots = (img[:n].float() * txt[:n].float()).sum(-1)
        diag = logits[:n, :n].diagonal().float()
        ok = dots.abs() > 1e-3
        if not bool(ok.any()):
            return None
        return float((diag[ok] / dots[ok]).median())


class FixTemperature(Intervention):
    name = "fix_temperature"
    tests = ("temperature",)
    changes = "the logit scale held at 1/0.07 = 14.29 (CLIP's value) and no longer trained"
    defaults = {"scale": TARGET_SCALE}

    def setup(self, watch: Any) -> None:
        self._candidates = [(n, p) for n, p in trainable_named(watch.model) if p.numel() == 1]
        if not self._candidates:
            raise NotApplicable("fix_temperature: the model has no trainable scalar parameter (no learnable "
                                "temperature or logit scale to fix)")
        self._param: torch.nn.Parameter | None = None
        self._before: float | None = None  # the scale measured before the hold, until the next step checked it

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if self._param is None:
            self._choose(seen)
        elif self._before is not None:
            self._check_followed(seen)
        with torch.no_grad():
            self._param.fill_(self._value)
        self._param.grad = None  # this step's update would move it: the optimizer skips a param without grad

    def _choose(self, seen: dict[str, Any]) -> None:
        scale = measured_scale(seen)
        found = None
        if scale is not None and math.isfinite(scale) and scale > 0:
            for name, p in self._candidates:
                v = float(p.detach())
                for conv, (to_scale, _) in CONVENTIONS.items():
                    try:
                        s = to_scale(v)
                    except (OverflowError, ZeroDivisionError):
                        continue
                    if math.isfinite(s) and abs(s - scale) <= MATCH_REL * scale:
                        found = found or (name, p, conv)
        # a parameter taken by its name although the logits carry a scale it does not reproduce: the next step
        # checks that the logits follow the hold
        unexplained = found is None and scale is not None and math.isfinite(scale) and scale > 0
        if found is None:
            found = self._by_name(scale)
        name, p, conv = found
        self._param, self._value = p, CONVENTIONS[conv][1](float(self.params["scale"]))
        self._name, self._before = name, scale if unexplained else None
        p.requires_grad_(False)
        if float(p.detach()) != self._value:
            self.reached.append(f"`{name}` moved from {float(p.detach()):.4g} to {self._value:.4g}")
        how = f"measured scale {scale:.3g} on step 1" if scale is not None else "by its name"
        self.did.append(f"held `{name}` ({conv}, found {how}) at {self._value:.4g}: logit scale "
                        f"{float(self.params['scale']):.4g}")

    def _check_followed(self, seen: dict[str, Any]) -> None:
        """The first step after the hold: its logits must carry the target scale, or at least another one."""
        before, self._before = self._before, None
        after, target = measured_scale(seen), float(self.params["scale"])
        if after is None or not math.isfinite(after) or abs(after - target) <= MATCH_REL * target:
            return
        if abs(after - before) <= MATCH_REL * before:
            raise NotApplicable(f"fix_temperature: `{self._name}` held at {self._value:.4g}, but the logits still "
                                f"carry scale {after:.3g} ({before:.3g} before; target {target:.4g}): something "
                                f"between the parameter and the logits (a clamp, a constant) sets the scale")

    def _by_name(self, scale: float | None) -> tuple[str, Any, str]:
        named = [(n, p) for n, p in self._candidates if NAME.search(n)]
        if not named:
            seen = f"the logits carry scale {scale:.3g}, which " if scale is not None else ""
            raise NotApplicable(f"fix_temperature: {seen}no scalar parameter matches it and none is named like a "
                                f"temperature (scalars: {', '.join(n for n, _ in self._candidates[:5])})")
        name, p = named[0]
        low = name.lower()
        if "log" in low and ("temp" in low or "tau" in low):
            return name, p, "log temperature (logits / exp(p))"
        if "temp" in low or "tau" in low:
            return name, p, "temperature (logits / p)"
        return name, p, "log scale (logits x exp(p))"
