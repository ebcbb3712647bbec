"""Loss split: what each component contributes, against its chance value.

Probe ``loss_split``:
  target = component name: value, weight, weighted (w·L), chance, ratio_to_chance (L / chance),
      nonfinite (1 if the value is NaN/Inf)
  target ``total``: value (the logged total, key "total" in `losses`), weighted_sum (Σ wᵢLᵢ over
      components with a weight), total_minus_weighted_sum
  target ``<a>~<b>``: components_identical (1.0 if |L_a − L_b| ≤ atol at this step, else 0.0)
  target ``extras``: any scalar passed as `extras` (sampled MRL dim, logit scale, …) and
      batch_size.
Chance for a contrastive (InfoNCE) component over B candidates is ln(B): a uniform softmax. It is
taken from `chance=` or, for names containing clip/mrl/contrastive/infonce/itc, ln(batch_size).
"""

from __future__ import annotations

import math
import numbers
import re
from itertools import combinations
from typing import TYPE_CHECKING

import torch

from .base import Observation, Probe

if TYPE_CHECKING:
    from .session import ProbeSession

CONTRASTIVE = re.compile(r"clip|mrl|contrastive|infonce|itc", re.IGNORECASE)
TOTAL_KEYS = ("total", "loss", "loss_total")


class LossSplit(Probe):
    name = "loss_split"

    def __init__(self, identical_atol: float = 1e-6) -> None:
        self.identical_atol = identical_atol

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        if not session.due(obs.step):
            return
        names = list(obs.losses)
        extras = dict(obs.extras)
        if obs.batch_size is not None:
            extras.setdefault("batch_size", obs.batch_size)
        ex_keys = [k for k, v in extras.items() if _is_scalar(v)]
        values = [_scalar(obs.losses[n]) for n in names] + [_scalar(extras[k]) for k in ex_keys]

        # what the rows need of the observation, not the observation: its embeddings and logits must not outlive
        # the step while the values are on their way from a device (probes._records.RecordBuffer.flush)
        light = Observation(step=obs.step, weights=dict(obs.weights), chance=dict(obs.chance),
                            batch_size=obs.batch_size)

        def finish(floats: list[float]) -> list[tuple[str, str, float]]:
            rows = self._rows(dict(zip(names, floats)), light)
            return rows + [("extras", k, v) for k, v in zip(ex_keys, floats[len(names):])]

        session.buffer.later(obs.step, self.name, values, finish)

    def _rows(self, values: dict[str, float], obs: Observation) -> list[tuple[str, str, float]]:
        total_key = next((k for k in TOTAL_KEYS if k in values), None)
        components = [n for n in values if n != total_key]
        rows: list[tuple[str, str, float]] = []
        weighted_sum, have_weights = 0.0, False
        for n in components:
            v = values[n]
            rows.append((n, "value", v))
            rows.append((n, "nonfinite", 0.0 if math.isfinite(v) else 1.0))
            if n in obs.weights:
                w = float(obs.weights[n])
                rows += [(n, "weight", w), (n, "weighted", w * v)]
                weighted_sum += w * v
                have_weights = True
            chance = obs.chance.get(n)
            if chance is None and obs.batch_size and obs.batch_size > 1 and CONTRASTIVE.search(n):
                chance = math.log(obs.batch_size)
            if chance is not None:
                chance = float(chance)
                rows += [(n, "chance", chance), (n, "ratio_to_chance", v / chance if chance else math.nan)]
        if total_key is not None:
            total = values[total_key]
            rows.append(("total", "value", total))
            rows.append(("total", "nonfinite", 0.0 if math.isfinite(total) else 1.0))
            if have_weights:
                rows += [("total", "weighted_sum", weighted_sum),
                         ("total", "total_minus_weighted_sum", total - weighted_sum)]
        for a, b in combinations(components, 2):
            same = math.isfinite(values[a]) and abs(values[a] - values[b]) <= self.identical_atol
            rows.append((f"{a}~{b}", "components_identical", 1.0 if same else 0.0))
        return rows


def _scalar(v):
    if isinstance(v, torch.Tensor):
        v = v.detach() if v.requires_grad else v  # a loss `watch` already detached costs no op here
        return v.float().mean() if v.numel() != 1 else v
    return float(v)


def _is_scalar(v) -> bool:
    if isinstance(v, torch.Tensor):
        return v.numel() == 1
    return isinstance(v, numbers.Real)
