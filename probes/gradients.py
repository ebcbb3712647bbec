"""Gradient flow: per parameter, per module and per layer block.

Metrics (probe ``gradient_flow``, target = parameter name):
  grad_norm, param_norm, grad_to_param, zero_grad_frac (share of exactly-zero grad elements),
  nonfinite_grad (count of NaN/Inf grad elements), grad_is_none and numel (only for trainable parameters
  that received no gradient: 1, and their element count), update_to_param = ‖θ_after − θ_before‖ / ‖θ_before‖
  of the optimizer step that followed the observation.
  probe ``gradient_flow.model`` also, at the first observation after a measured update (nothing else stepped in
  between): outside_to_update = ‖θ_now − θ_after‖ / ‖θ_after − θ_before‖, how far something other than the
  optimizer moved the weights between its step and this observation (an EMA copied into the live weights, a
  hand-written decay, a renorm, a reload), against the step's own update; outside_to_param = ‖θ_now − θ_after‖ /
  ‖θ_after‖; outside_shrink = Σ(‖θ_after‖ − ‖θ_now‖) / Σ‖θ_now − θ_after‖ over the parameter tensors (1: the
  write only scaled tensors down, a decay, whichever tensors it touched); and per parameter the `MAX_OUTSIDE_NAMED`
  largest non-zero writes as outside_to_param. Read on a fixed strided sample of each tensor
  (`OUTSIDE_SAMPLE` elements, norms scaled to the whole tensor): no copy of the weights.
  probe ``gradient_flow.model`` also, with each update: update_turn_to_param = √Σ‖Δ⊥‖² / ‖θ_before‖, the update less
  its projection on each tensor (a decay only rescales a tensor and reads ~0; a gradient's step turns it), and
  update_rescale_to_param, that projection's part over the tensors of two or more elements; read on the same
  strided samples.
  probe ``gradient_flow.model`` also, where weights are stored in float16 / bfloat16: low_precision_share (their
  share of the trainable elements) and low_precision_unchanged_frac (the share of those elements the optimizer
  step left bit-identical: an update under half the spacing of neighbouring numbers rounds back to the old
  weight; one count per step on the snapshot already taken, float32 weights pay nothing).
Aggregates use the norm of the concatenated group (√Σ‖·‖²), summed counts and pooled fractions:
  probe ``gradient_flow.module`` — target = owning module path (``<root>`` for top-level params);
  probe ``gradient_flow.layer``  — target = enclosing indexed block (``...layers.3``), else the
  module path;
  probe ``gradient_flow.model``  — target ``model``: everything trainable.
  Each aggregate also gets ``numel`` (its trainable elements) once, at the first measured step.

Values may be nan/inf when the gradients are; `nonfinite_grad` says how many elements were.

Sampling (`probes.schedule.FullSchedule`): all of the above on every measured step of the first 50, then
on fewer (one in `FULL_EVERY` from step 250: as few as leave the rules' end window its readings) and on
every expensive step; on the other measured steps only the model's ``grad_norm`` and ``nonfinite_grad``
(probe ``gradient_flow.model``) and, where a gradient is not finite, the parameter's ``nonfinite_grad``:
one pass over the gradients instead of six over all parameters. The coverage line
``gradient_flow_full_steps`` says on how many steps the sampled metrics were taken.
"""

from __future__ import annotations

import math
import re
import weakref
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ._records import Columns
from .base import Observation, Probe

if TYPE_CHECKING:
    from .session import ProbeSession

# Per parameter, the largest writes outside the optimizer named in the records (the model row has them all).
MAX_OUTSIDE_NAMED = 5
# Elements of each tensor the outside writes are read on (a fixed stride): a copy of the 3.2 M weights of
# benchmarks/watch_cost.py's MLP after each measured step and three passes over them at the next observation cost
# ~3 ms of CPU; a sample of about 1024 per tensor (29 k of its 45 tensors' elements) ~0.5 ms, and the writes it is for
# (an EMA or a checkpoint copied in, a decay, a reload) touch every element alike: a norm from 1024 of them is within
# a few percent. A write to a few elements of a large tensor can fall between the samples.
OUTSIDE_SAMPLE = 1024
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


PARAM_METRICS = ["grad_norm", "param_norm", "grad_to_param", "zero_grad_frac", "nonfinite_grad"]
LEVEL_METRICS = [*PARAM_METRICS, "grad_is_none_frac"]
# the rows of a parameter without a gradient (its element count: parameters only)
NO_GRAD_METRICS = ["grad_is_none", "param_norm", "numel"]
LOW_PRECISION = (torch.float16, torch.bfloat16)


def by_device_dtype(tensors: list[torch.Tensor]) -> list[list[int]]:
    """Indices of `tensors` grouped by (device, dtype): one fused call per group."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    return list(groups.values())


def fused_norms(tensors: list[torch.Tensor], ord: float = 2.0) -> torch.Tensor:
    """Norms of same-device, same-dtype `tensors` as one 1-d tensor on their device: one
    ``torch._foreach_norm`` (a per-tensor loop where the device has no foreach kernel)."""
    try:
        norms = torch._foreach_norm(tensors, ord)
    except (NotImplementedError, RuntimeError, AttributeError):
        norms = [torch.linalg.vector_norm(t, ord) for t in tensors]
    return torch.stack(list(norms))


def nonzero_counts(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Non-zero elements of each tensor as one 1-d tensor. On CPU `_foreach_norm(ord=0)` has no vectorised
    kernel (6x slower than one count_nonzero per tensor); elsewhere it is the fused call."""
    if tensors[0].device.type == "cpu":
        return torch.stack([torch.count_nonzero(t) for t in tensors])
    return fused_norms(tensors, 0)


def nonnegative_sums(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sums of non-negative tensors (their 1-norms) as one 1-d tensor. On CPU `_foreach_norm(ord=1)` has no vectorised
    kernel (9x slower than one sum per tensor, measured on 4.2 M elements); elsewhere it is the fused call."""
    if tensors[0].device.type == "cpu":
        return torch.stack([t.sum() for t in tensors])
    return fused_norms(tensors, 1)


def _ratios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b elementwise, with x / 0 = inf (0 / 0 = 0), as `_ratio`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0.0, np.where(a != 0.0, math.inf, 0.0), a / np.where(b == 0.0, 1.0, b))


def _ratio(a: float, b: float) -> float:
    if b == 0.0:
        return math.inf if a != 0.0 else 0.0
    return a / b


class GradientFlow(Probe):
    """Per-step cost independent of the number of parameter tensors: the norms are computed by one fused
    call per (device, dtype) group and kind (grads, params, update deltas, non-zero counts), kept on the
    device as a few 1-d tensors that reach the host with the step's other values (one transfer), and
    aggregated per module / layer / model with numpy on the host."""

    name = "gradient_flow"

    def __init__(self, track_updates: bool = True) -> None:
        self.track_updates = track_updates
        self._sizes_sent = False  # the aggregates' numel rows go out with the first measured step
        self._snapshot: list[torch.Tensor] | None = None
        self._pending: tuple[int, list[torch.Tensor]] | None = None  # (step, ‖θ_before‖ per fused group)
        # after a measured update: (‖θ_after − θ_before‖ per fused group, θ_after's samples per fused group, the
        # session's count of optimizer steps then: a later step before the next observation voids the reading)
        self._after: tuple[list[torch.Tensor], list[torch.Tensor], int] | None = None
        self.model_update: list[float] = []  # model-level update/param of the recent steps (schedule reads it)

    def setup(self, session: "ProbeSession") -> None:
        named = [(n, p) for n, p in session.model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.numel = [p.numel() for p in self.params]
        self._numel = np.asarray(self.numel, dtype=np.float64)
        self._fused = by_device_dtype(self.params)
        self._layouts: dict[tuple, tuple] = {}
        self._fused_params = [[self.params[i] for i in group] for group in self._fused]
        self._low_numel = float(sum(self.numel[i] for group in self._fused for i in group
                                    if self.params[i].dtype in LOW_PRECISION))
        self._order = np.asarray([i for g in self._fused for i in g], dtype=np.int64)
        # the outside writes are read on a fixed strided sample of each tensor: sqrt(numel / sampled) scales a sample's
        # norm to the tensor's (exact for tensors of at most OUTSIDE_SAMPLE elements, which are read whole)
        self._strides = [max(1, k // OUTSIDE_SAMPLE) for k in self.numel]
        self._sampled = [-(-k // s) for k, s in zip(self.numel, self._strides)]
        self._sample_scale = np.sqrt(self._numel / np.maximum(np.asarray(self._sampled, dtype=np.float64), 1.0))
        self._lengths_dev: dict[tuple, torch.Tensor] = {}
        # CUDA values reach the host a step or two later (probes._records.RecordBuffer.flush): by then the
        # gradients a count would read may be gone, so each measured step notes which gradient each norm read
        self._late: bool | None = None  # None: read from where the parameters are at each step (a model moved later)
        prefixes = _indexed_prefixes(session.model)
        self.groups: dict[str, dict[str, list[int]]] = {"module": {}, "layer": {}}
        for i, n in enumerate(self.names):
            self.groups["module"].setdefault(n.rpartition(".")[0] or "<root>", []).append(i)
            self.groups["layer"].setdefault(layer_of(n, prefixes), []).append(i)
        self.groups["model"] = {"model": list(range(len(self.names)))}
        # per level: the group index of every parameter (for np.bincount) and the group targets
        self._segments = {level: (np.asarray([k for k, idx in enumerate(groups.values()) for _ in idx]),
                                  np.asarray([i for idx in groups.values() for i in idx]), list(groups))
                          for level, groups in self.groups.items()}

    # -- observation (grads present, optimizer not yet stepped) -----------------------------
    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        self._finish_update(session)  # the user skipped after_step and gave no optimizer
        self._outside_writes(session, obs.step)
        if not self.params or not session.due(obs.step):
            return
        if session.full:
            self._observe_full(session, obs.step)
        else:
            self._observe_light(session, obs.step)

    def _with_grads(self) -> list[list[int]]:
        """Per fused group: the indices of its parameters that hold a gradient now (groups without any left out)."""
        params = self.params
        return [got for got in ([i for i in group if params[i].grad is not None] for group in self._fused) if got]

    def _observe_full(self, session: "ProbeSession", step: int) -> None:
        """Every metric (`probes.schedule.FULL_EVERY`): param norms, grad norms, non-zero counts, and the
        snapshot the update after the optimizer step is measured against."""
        params = self.params
        values: list[torch.Tensor] = []
        have = self._with_grads()
        with torch.no_grad():
            for group_params in self._fused_params:
                values.append(fused_norms(group_params))
            for got in have:
                grads = [params[i].grad for i in got]
                values += [fused_norms(grads), nonzero_counts(grads)]
            if self.track_updates:
                if self._snapshot is None:
                    self._snapshot = [p.detach().clone() for p in params]
                else:
                    for group, group_params in zip(self._fused, self._fused_params):
                        torch._foreach_copy_([self._snapshot[i] for i in group], group_params)
        if self.track_updates:  # ‖θ_before‖ per group, on the device: the update's rows need no earlier transfer
            self._pending = (step, values[:len(self._fused_params)])
        refs = self._grad_refs(have)
        # the norms reach the host with every other value of the step (one transfer, `flush`)
        session.buffer.later(step, self.name, values, lambda floats: self._rows(session, step, have, floats, refs))

    def _observe_light(self, session: "ProbeSession", step: int) -> None:
        """The other measured steps: one fused pass over the gradients, whose norms give the model's grad
        norm and, where one is not finite, the element counts that say which parameters hold NaN/Inf."""
        params = self.params
        have = self._with_grads()
        if not have:
            return
        with torch.no_grad():
            values = [fused_norms([params[i].grad for i in got]) for got in have]
        refs = self._grad_refs(have)
        session.buffer.later(step, self.name, values,
                             lambda floats: self._light_rows(session, step, have, floats, refs))

    def _grad_refs(self, have: list[list[int]]) -> dict | None:
        """Where values reach the host late (CUDA): each measured gradient's weak reference and version."""
        params = self.params
        if not (self._late if self._late is not None else (params and params[0].is_cuda)):
            return None
        return {i: (weakref.ref(params[i].grad), params[i].grad._version) for got in have for i in got}

    def _nonfinite_elements(self, i: int, refs: dict | None) -> float:
        """NaN/Inf elements of parameter i's gradient, whose norm is not finite (a second read, only then). Where
        that gradient is gone or changed by the time its norm reached the host (`_grad_refs`), 1: a lower bound."""
        g = self.params[i].grad
        if refs is not None:
            ref, version = refs[i]
            if g is None or g is not ref() or g._version != version:
                return 1.0
        return float((~torch.isfinite(g)).sum())

    def _light_rows(self, session: "ProbeSession", step: int, have: list[list[int]], floats: list[float],
                    refs: dict | None = None) -> Columns:
        # in plain Python (a few dozen floats: numpy's calls cost more than the sum), correctly rounded
        total = math.sqrt(math.fsum([v * v for v in floats]))
        bad: list[tuple[str, float]] = []
        if not math.isfinite(total):  # only then: which parameters, and how many elements (a second read)
            gn = np.asarray(floats, dtype=np.float64)
            idx = [i for got in have for i in got]
            bad = [(self.names[idx[j]], self._nonfinite_elements(idx[j], refs))
                   for j in np.flatnonzero(~np.isfinite(gn))]
        session.buffer.extend_columns(step, f"{self.name}.model",
                                      Columns(["model", "model"], ["grad_norm", "nonfinite_grad"],
                                              [total, sum(n for _, n in bad)]))
        return Columns([t for t, _ in bad], ["nonfinite_grad"] * len(bad), [n for _, n in bad])

    def _unpack(self, floats: list[float], have: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Param norms (all), grad norms and non-zero counts (nan / 0 where no grad), by parameter index,
        from the floats in the order `observe` emitted them: param norms per group, then per group with
        gradients its grad norms and its non-zero counts."""
        n = len(self.params)
        flat = np.asarray(floats, dtype=np.float64)
        pn = np.empty(n)
        pn[self._order] = flat[:n]
        gn, nz = np.full(n, math.nan), np.zeros(n)
        at = n
        for got in have:
            m = len(got)
            gn[got] = flat[at : at + m]
            nz[got] = flat[at + m : at + 2 * m]
            at += 2 * m
        return pn, gn, nz

    def _rows(self, session: "ProbeSession", step: int, have: list[list[int]], vals: list[float],
              refs: dict | None = None) -> Columns:
        params = self.params
        pn, gn, nz = self._unpack(vals, have)
        has = np.zeros(len(params), dtype=bool)
        has[[i for got in have for i in got]] = True
        nonfinite = np.zeros(len(params))
        for i in np.flatnonzero(has & ~np.isfinite(gn)):
            # only pay for an element count (a second sync) where the norm already says something is wrong
            nonfinite[i] = self._nonfinite_elements(i, refs)
        zero = np.where(self._numel > 0, 1.0 - nz / np.maximum(self._numel, 1.0), 0.0)
        # per parameter, in name order: with a gradient the 5 metrics of PARAM_METRICS, without one
        # grad_is_none (1) and param_norm: a (n, 5) table and a mask of the cells that are rows
        # (a parameter without a gradient has its element count in the third cell: how much of the model it is)
        table = np.column_stack([np.where(has, gn, 1.0), pn, np.where(has, _ratios(gn, pn), self._numel), zero,
                                 nonfinite])
        first, self._sizes_sent = not self._sizes_sent, True
        for level in self.groups:
            session.buffer.extend_columns(step, f"{self.name}.{level}",
                                          self._aggregate(level, pn, gn, nz, nonfinite, has, first))
        targets, metrics, mask = self._layout(("param", has.tobytes()), self.names, has, PARAM_METRICS, False,
                                              level=False)
        return Columns(targets, metrics, table[mask].tolist())

    def _layout(self, key: tuple, targets: list[str], has: np.ndarray, got_metrics: list[str],
                numel_first: bool, level: bool = True) -> tuple:
        """Targets and metrics of the rows of a (len(targets), 5 or 6 [+1]) table and the mask of its cells
        that are rows, for one pattern of which targets have gradients (cached: the pattern rarely changes)."""
        cached = self._layouts.get(key)
        if cached is not None:
            return cached
        width = len(got_metrics) + numel_first
        mask = np.zeros((len(targets), width), dtype=bool)
        out_t: list[str] = []
        out_m: list[str] = []
        for j, target in enumerate(targets):
            names = (["numel"] if numel_first else []) + (got_metrics if has[j] else NO_GRAD_METRICS[: 2 + (not level)])
            mask[j, : len(names)] = True
            out_t += [target] * len(names)
            out_m += names
        self._layouts[key] = (out_t, out_m, mask)
        return self._layouts[key]

    def _aggregate(self, level: str, pn: np.ndarray, gn: np.ndarray, nz: np.ndarray, nonfinite: np.ndarray,
                   has: np.ndarray, first: bool) -> Columns:
        """Rows of one aggregation level: norms of the concatenated group (√Σ‖·‖²), summed counts, pooled
        fractions; `grad_is_none` where no parameter of the group got a gradient; `numel` once, first."""
        seg, idx, targets = self._segments[level]
        k = len(targets)
        h = has[idx]

        def total(x: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
            return np.bincount(seg if where is None else seg[where], (x[idx] if where is None else x[idx][where]),
                               minlength=k)

        p2 = np.sqrt(total(pn * pn))
        g2 = np.sqrt(total(np.where(has, gn * gn, 0.0), h))
        numel = total(self._numel, h)
        got = np.bincount(seg[h], minlength=k)
        zero = np.where(numel > 0, 1.0 - total(nz, h) / np.maximum(numel, 1.0), 0.0)
        cols = [np.where(got > 0, g2, 1.0), p2, _ratios(g2, p2), zero, total(nonfinite, h),
                1.0 - got / np.bincount(seg, minlength=k)]
        if first:  # once: a layer of one scalar (a logit scale) is not a layer a step can rewrite
            cols.insert(0, total(self._numel))
        targets_, metrics, mask = self._layout((level, first, (got > 0).tobytes()), targets, got > 0, LEVEL_METRICS,
                                               first)
        return Columns(targets_, metrics, np.column_stack(cols)[mask].tolist())

    def coverage(self, session: "ProbeSession", records) -> dict:
        return {"gradient_flow_full_steps": session.full_schedule.describe()}

    # -- after the optimizer step ------------------------------------------------------------
    def after_step(self, session: "ProbeSession") -> None:
        self._finish_update(session, stepped=True)

    def close(self, session: "ProbeSession") -> None:
        if session.closing_on_error:
            self._pending = None  # the optimizer step after the last observe may not have run
        self._finish_update(session)
        self._snapshot = self._after = None

    def _finish_update(self, session: "ProbeSession", stepped: bool = False) -> None:
        """The update of the step after a full observation (`stepped`: called at the optimizer's step, whose
        θ_after the next observation compares with; else at an observe or close, where nothing can be)."""
        if self._pending is None or self._snapshot is None:
            return
        step, before = self._pending
        self._pending = None
        values, counts = [], []
        with torch.no_grad():
            for group, group_params in zip(self._fused, self._fused_params):
                # snapshot := θ_before − θ_after, in place: no allocation per step
                snap = [self._snapshot[i] for i in group]
                torch._foreach_sub_(snap, group_params)
                values.append(fused_norms(snap))
                if group_params[0].dtype in LOW_PRECISION:  # which elements the step changed at all
                    counts.append(nonzero_counts(snap).sum())
            after = [torch.cat(g) for g in self._samples()]  # θ_after's sample per group
            if stepped:  # kept for the writes before the next observe
                self._after = (values, after, session.optimizer_steps)
            turns = self._turn_sums(after)
        k = len(counts)
        session.buffer.later(step, self.name, values + counts + list(before) + turns,
                             lambda floats: self._update_rows(session, step, floats, k))

    def _turn_sums(self, after: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per fused group, a (2, tensors) table over each tensor's sample (`after`: the weights' samples after the
        step, joined per group): Σ‖Δ⊥‖², the update (held in the snapshot) less its projection on the weights after
        it, Δ² - (Δ·θ)² / θ² (all of Δ where θ is zero), and that projection's (Δ·θ)² / θ². Computed in float64 where
        the device has it: a decay's step is radial to 1e-7, and the difference of two sums that close needs it."""
        snaps = [[self._snapshot[i].reshape(-1)[::self._strides[i]] for i in group] for group in self._fused]
        out = []
        for k, (delta, theta) in enumerate(zip(snaps, after)):
            dtype = torch.float64 if delta[0].device.type in ("cpu", "cuda") else torch.float32
            d, t = torch.cat(delta).to(dtype), theta.to(dtype)
            dot, tt, dd = self._segment_sums(k, torch.stack([d * t, t * t, d * d]))
            radial = torch.where(tt > 0, dot * dot / tt.clamp(min=torch.finfo(dtype).tiny), torch.zeros_like(dd))
            out.append(torch.stack([(dd - radial).clamp(min=0), radial.clamp(max=dd)]))
        return out

    def _outside_writes(self, session: "ProbeSession", step: int) -> None:
        """How far the weights moved between the optimizer's last measured step and this observation."""
        if self._after is None:
            return
        update, after, steps = self._after
        self._after = None
        if steps == 0 or session.optimizer_steps != steps:  # no optimizer hooked (nothing says where its steps
            return  # end), or another of its steps came before this observation
        sums = []
        with torch.no_grad():  # per group one (3, tensors) table: Σ write², Σ θ_after², Σ θ_now² over each sample
            for k, (was, group) in enumerate(zip(after, self._samples())):
                was, now = was.float(), torch.cat(group).float()
                sums.append(self._segment_sums(k, torch.stack([(was - now).square(), was.square(), now.square()])))
        session.buffer.later(step, self.name, list(update) + sums,
                             lambda floats: self._outside_rows(session, step, floats))

    def _samples(self) -> list[list[torch.Tensor]]:
        """Per fused group, every parameter as a strided view of at most about `OUTSIDE_SAMPLE` of its elements."""
        params, strides = self.params, self._strides
        return [[params[i].detach().reshape(-1)[::strides[i]] for i in group] for group in self._fused]

    def _segment_sums(self, k: int, rows: torch.Tensor) -> torch.Tensor:
        """(3, tensors of group k): the rows' sums over each tensor's stretch of the concatenated samples; one call
        where the device has `segment_reduce`, else one sum per tensor."""
        try:
            return torch.segment_reduce(rows, "sum", lengths=self._lengths(k, rows.device), axis=1)
        except (RuntimeError, NotImplementedError):
            sizes = [self._sampled[i] for i in self._fused[k]]
            return torch.stack([part.sum(dim=1) for part in rows.split(sizes, dim=1)], dim=1)

    def _lengths(self, k: int, device: torch.device) -> torch.Tensor:
        """Group k's samples concatenated: each tensor's sampled length, as `segment_reduce` takes them for its three
        rows (kept per device)."""
        key = (k, str(device))
        if key not in self._lengths_dev:
            counts = torch.tensor([self._sampled[i] for i in self._fused[k]], device=device)
            self._lengths_dev[key] = counts.expand(3, -1).contiguous()
        return self._lengths_dev[key]

    def _outside_rows(self, session: "ProbeSession", step: int, floats: list[float]) -> Columns:
        n = len(self.params)
        update, write, after, now = (np.empty(n) for _ in range(4))
        update[self._order] = floats[:n]
        at = n
        for group in self._fused:  # each group's (3, len(group)) table, row by row
            k = len(group)
            for j, arr in enumerate((write, after, now)):
                arr[group] = floats[at + j * k:at + (j + 1) * k]
            at += 3 * k
        with np.errstate(invalid="ignore"):  # sums of squares of the samples, scaled to the whole tensors' norms
            write, after, now = (np.sqrt(x) * self._sample_scale for x in (write, after, now))

        with np.errstate(invalid="ignore", over="ignore"):  # non-finite weights give NaN readings, not warnings
            w, u, a = (float(np.sqrt(np.sum(x * x))) for x in (write, update, after))
            shrink = _ratio(float(np.sum(after - now)), float(np.sum(write)))
        session.buffer.extend_columns(step, f"{self.name}.model", Columns(
            ["model"] * 3, ["outside_to_update", "outside_to_param", "outside_shrink"],
            [_ratio(w, u), _ratio(w, a), shrink]))
        with np.errstate(invalid="ignore"):
            rel = _ratios(write, after)
        top = [i for i in np.argsort(-rel, kind="stable")[:MAX_OUTSIDE_NAMED] if write[i] > 0.0]
        return Columns([self.names[i] for i in top], ["outside_to_param"] * len(top), rel[top].tolist())

    def _turn_rows(self, session: "ProbeSession", step: int, floats: list[float], norm_before: float) -> None:
        """update_turn_to_param: the part of the update that is not a rescaling of each tensor (`_turn_sums`), as
        √Σ‖Δ⊥‖² over the tensors / ‖θ_before‖ of the model. A decay's step rescales every tensor and reads ~0; a
        gradient's step turns them. update_rescale_to_param: the rescaling part of tensors of two or more elements
        (a one-element tensor, a logit scale, can only be rescaled, by its gradient as much as by a decay)."""
        perp, radial = np.empty(len(self.params)), np.empty(len(self.params))
        at = 0
        for group in self._fused:  # each group's (2, len(group)) table, row by row
            k = len(group)
            perp[group], radial[group] = floats[at:at + k], floats[at + k:at + 2 * k]
            at += 2 * k
        with np.errstate(invalid="ignore", over="ignore"):
            scale2 = self._sample_scale ** 2  # the sample's sums scaled to the tensor's
            turn = _ratio(float(np.sqrt(np.sum(perp * scale2))), norm_before)
            rescale = _ratio(float(np.sqrt(np.sum((radial * scale2)[self._numel > 1]))), norm_before)
        session.buffer.extend_columns(step, f"{self.name}.model", Columns(
            ["model", "model"], ["update_turn_to_param", "update_rescale_to_param"], [turn, rescale]))

    def _update_rows(self, session: "ProbeSession", step: int, floats: list[float], k_counts: int) -> Columns:
        """From the floats of: the update norms, `k_counts` unchanged-element counts, the norms before the step."""
        n = len(self.params)
        dn, before = np.empty(n), np.empty(n)
        dn[self._order] = floats[:n]
        before[self._order] = floats[n + k_counts:2 * n + k_counts]
        self._turn_rows(session, step, floats[2 * n + k_counts:], float(np.sqrt(np.sum(before * before))))
        for level, (seg, idx, targets) in self._segments.items():
            k = len(targets)
            d2 = np.sqrt(np.bincount(seg, (dn * dn)[idx], minlength=k))
            p2 = np.sqrt(np.bincount(seg, (before * before)[idx], minlength=k))
            ratio = _ratios(d2, p2).tolist()
            if level == "model":
                self.model_update = (self.model_update + ratio)[-31:]
            session.buffer.extend_columns(step, f"{self.name}.{level}",
                                          Columns(targets, ["update_to_param"] * k, ratio))
        if self._low_numel:  # float16 / bfloat16 weights: the share of their elements the step left as they were
            session.buffer.extend_columns(step, f"{self.name}.model", Columns(
                ["model", "model"], ["low_precision_unchanged_frac", "low_precision_share"],
                [1.0 - sum(floats[n:n + k_counts]) / self._low_numel,
                 self._low_numel / max(float(self._numel.sum()), 1.0)]))
        return Columns(self.names, ["update_to_param"] * len(dn), _ratios(dn, before).tolist())
