"""Gradient flow: per parameter, per module and per layer block.

Metrics (probe ``gradient_flow``, target = parameter name):
  grad_norm, param_norm, grad_to_param, zero_grad_frac (share of exactly-zero grad elements),
  nonfinite_grad (count of NaN/Inf grad elements), grad_is_none (1, only for trainable parameters
  that received no gradient), update_to_param = ‖θ_after − θ_before‖ / ‖θ_before‖ of the optimizer
  step that followed the observation.
Aggregates use the norm of the concatenated group (√Σ‖·‖²), summed counts and pooled fractions:
  probe ``gradient_flow.module`` — target = owning module path (``<root>`` for top-level params);
  probe ``gradient_flow.layer``  — target = enclosing indexed block (``...layers.3``), else the
  module path;
  probe ``gradient_flow.model``  — target ``model``: everything trainable.
  Each aggregate also gets ``numel`` (its trainable elements) once, at the first measured step.

Values may be nan/inf when the gradients are; `nonfinite_grad` says how many elements were.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import torch
from torch import nn

from .base import Observation, Probe

if TYPE_CHECKING:
    from .session import ProbeSession

# Outermost "<container>.<index>" whose container name reads like a stack of blocks.
_BLOCK = re.compile(r"^(.*?(?:^|\.)(?:layers?|blocks?|h|resblocks|layer_list)\.\d+)(?:\.|$)")


def layer_of(param_name: str, indexed_prefixes: list[str]) -> str:
    m = _BLOCK.match(param_name)
    if m:
        return m.group(1)
    for prefix in indexed_prefixes:  # outermost ModuleList entry
        if param_name.startswith(prefix + "."):
            return prefix
    return param_name.rpartition(".")[0] or "<root>"


def _indexed_prefixes(model: nn.Module) -> list[str]:
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList):
            out.extend(f"{name}.{child}" if name else child for child, _ in mod.named_children())
    return sorted(out, key=lambda s: s.count("."))


def _norms(tensors: list[torch.Tensor], ord: float = 2.0) -> list[torch.Tensor]:
    return list(torch._foreach_norm(tensors, ord)) if tensors else []


def _ratio(a: float, b: float) -> float:
    if b == 0.0:
        return math.inf if a != 0.0 else 0.0
    return a / b


class GradientFlow(Probe):
    name = "gradient_flow"

    def __init__(self, track_updates: bool = True) -> None:
        self.track_updates = track_updates
        self._sizes_sent = False  # the aggregates' numel rows go out with the first measured step
        self._snapshot: list[torch.Tensor] | None = None
        self._pending: tuple[int, list[float]] | None = None  # (step, ‖θ_before‖ per param)

    def setup(self, session: "ProbeSession") -> None:
        named = [(n, p) for n, p in session.model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.numel = [p.numel() for p in self.params]
        prefixes = _indexed_prefixes(session.model)
        self.groups: dict[str, dict[str, list[int]]] = {"module": {}, "layer": {}}
        for i, n in enumerate(self.names):
            self.groups["module"].setdefault(n.rpartition(".")[0] or "<root>", []).append(i)
            self.groups["layer"].setdefault(layer_of(n, prefixes), []).append(i)
        self.groups["model"] = {"model": list(range(len(self.names)))}

    # -- observation (grads present, optimizer not yet stepped) -----------------------------
    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        self._finish_update(session)  # the user skipped after_step and gave no optimizer
        if not self.params or not session.due(obs.step):
            return
        params = self.params
        with torch.no_grad():
            have = [i for i, p in enumerate(params) if p.grad is not None]
            grads = [params[i].grad for i in have]
            pn_t = _norms(params)
            gn_t = _norms(grads)
            # count_nonzero per tensor beats the fused ord-0 _foreach_norm (no vectorised CPU path)
            nz_t = [torch.count_nonzero(g) for g in grads]
            if self.track_updates:
                if self._snapshot is None:
                    self._snapshot = [p.detach().clone() for p in params]
                else:
                    torch._foreach_copy_(self._snapshot, [p.detach() for p in params])
        # the norms reach the host with every other value of the step (one transfer, `flush`)
        session.buffer.later(obs.step, self.name, pn_t + gn_t + nz_t,
                             lambda floats: self._rows(session, obs.step, have, floats))

    def _rows(self, session: "ProbeSession", step: int, have: list[int], vals: list[float]) -> list:
        params = self.params
        n, m = len(params), len(have)
        pn, gn, nz = vals[:n], vals[n : n + m], vals[n + m :]
        gnorm = [math.nan] * n
        nonzero = [0.0] * n
        nonfinite = [0.0] * n
        for j, i in enumerate(have):
            gnorm[i] = gn[j]
            nonzero[i] = nz[j]
            if not math.isfinite(gn[j]):
                # only pay for an element count (a second sync) where the norm already says something is wrong
                nonfinite[i] = float((~torch.isfinite(params[i].grad)).sum())
        rows = []
        names = self.names
        has = [False] * n
        for i in have:
            has[i] = True
        for i in range(n):
            name = names[i]
            if not has[i]:
                rows.append((name, "grad_is_none", 1.0))
                rows.append((name, "param_norm", pn[i]))
                continue
            rows += [
                (name, "grad_norm", gnorm[i]),
                (name, "param_norm", pn[i]),
                (name, "grad_to_param", _ratio(gnorm[i], pn[i])),
                (name, "zero_grad_frac", 1.0 - nonzero[i] / self.numel[i] if self.numel[i] else 0.0),
                (name, "nonfinite_grad", nonfinite[i]),
            ]
        first, self._sizes_sent = not self._sizes_sent, True
        for level, groups in self.groups.items():
            agg = []
            for target, idx in groups.items():
                if first:  # once: a layer of one scalar (a logit scale) is not a layer a step can rewrite
                    agg.append((target, "numel", float(sum(self.numel[i] for i in idx))))
                got = [i for i in idx if has[i]]
                p2 = math.sqrt(sum(pn[i] * pn[i] for i in idx))
                if not got:
                    agg += [(target, "grad_is_none", 1.0), (target, "param_norm", p2)]
                    continue
                g2 = math.sqrt(sum(gnorm[i] * gnorm[i] for i in got))
                numel = sum(self.numel[i] for i in got)
                agg += [
                    (target, "grad_norm", g2),
                    (target, "param_norm", p2),
                    (target, "grad_to_param", _ratio(g2, p2)),
                    (target, "zero_grad_frac", 1.0 - sum(nonzero[i] for i in got) / numel if numel else 0.0),
                    (target, "nonfinite_grad", sum(nonfinite[i] for i in got)),
                    (target, "grad_is_none_frac", 1.0 - len(got) / len(idx)),
                ]
            session.buffer.extend(step, f"{self.name}.{level}", agg)
        if self.track_updates:
            self._pending = (step, pn)
        return rows

    # -- after the optimizer step ------------------------------------------------------------
    def after_step(self, session: "ProbeSession") -> None:
        self._finish_update(session)

    def close(self, session: "ProbeSession") -> None:
        if session.closing_on_error:
            self._pending = None  # the optimizer step after the last observe may not have run
        self._finish_update(session)
        self._snapshot = None

    def _finish_update(self, session: "ProbeSession") -> None:
        if self._pending is None or self._snapshot is None:
            return
        step, before = self._pending
        self._pending = None
        with torch.no_grad():
            # snapshot := θ_before − θ_after, in place: no allocation per step
            torch._foreach_sub_(self._snapshot, [p.detach() for p in self.params])
            dn_t = _norms(self._snapshot)
        session.buffer.later(step, self.name, dn_t, lambda dn: self._update_rows(session, step, before, dn))

    def _update_rows(self, session: "ProbeSession", step: int, before: list[float], dn: list[float]) -> list:
        names = self.names
        for level, groups in self.groups.items():
            rows = []
            for target, idx in groups.items():
                d2 = math.sqrt(sum(dn[i] * dn[i] for i in idx))
                p2 = math.sqrt(sum(before[i] * before[i] for i in idx))
                rows.append((target, "update_to_param", _ratio(d2, p2)))
            session.buffer.extend(step, f"{self.name}.{level}", rows)
        return [(names[i], "update_to_param", _ratio(dn[i], before[i])) for i in range(len(names))]
