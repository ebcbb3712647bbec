"""The optimizer the user handed over, read directly: the learning rate each param group has now, and
the trainable parameters that receive gradients but belong to no param group.

Probe ``optimizer`` (python numbers, but for the second moments' sums on the full steps, below):
  target ``group<i>`` (or the group's ``name`` key when it has one): lr (this step's), lr_initial (the
      group's ``initial_lr``, which a scheduler sets to the lr the user asked for; else the first lr
      seen), lr_start (the group's lr when the watch opened: what the optimizer was built with, before
      the loop set anything by hand), params (trainable tensors in the group), numel
  target ``outside``: trainable (trainable tensors in no group), with_grad (of those, how many hold a
      gradient at this observation: they are on the loss's path and the optimizer never moves them),
      numel_with_grad
  target = parameter name, metric ``outside_optimizer_numel``: the first `MAX_NAMED` such parameters
      by name, so a finding can say which ones.
  target ``foreign``: tensors (tensors in a param group that are not parameters of the watched model: another
      module's, or another instance's after a model was rebuilt or reloaded under an optimizer built before),
      with_grad (of those, how many hold a gradient now: a loss module's temperature does; a stale copy never).
  per group frozen (tensors in the group with requires_grad=False: the optimizer holds them, nothing steps them)
      and frozen_stepped (of those, how many the optimizer holds state for: it stepped them before);
  per group also weight_decay and decoupled (1 for AdamW-style decay applied to the weights, 0 for an L2 term
      added to the gradient: Adam, SGD, RMSprop with weight_decay); and once, at the first observation and
      when the groups change, metric ``optimizer_group`` = the group's index for every trainable parameter
      in a group with weight_decay > 0 (a rule then reads the decay term against the gradient with the
      gradient_flow probe's per-parameter norms).
  per group decay_per_step (the share of the weights SGD's L2 decay alone removes per step: lr x wd x
      (1 - dampening) / (1 - momentum); 0 without decay, NaN for other optimizers), and
      lr_schedule_peak where a schedule keeps its peak in the group (OneCycleLR: ``max_lr``) or on itself (CyclicLR:
      ``max_lrs``; the schedulers of the optimizer are found once, by one scan of the live objects at the first
      observation that shows one attached).
  target ``optimizer``: scheduler_attached (1 when a torch LR scheduler was built on this optimizer: it wraps
      optimizer.step); steps_called (how many times optimizer.step() ran since the watch opened: its post-hook's
      count, observed steps or not); state_steps_at_start, at the first observation: the step count the
      optimizer's state held when the watch opened (Adam's ``step``; 0 for a fresh optimizer, or one whose state
      keeps no count): N > 0 is an optimizer resumed with `load_state_dict`, its param groups' lr (lr_start) the one
      it was stepping at.
  per group, on the steps of the full gradient measurement, for optimizers that divide by a running second
      moment plus ``eps`` (Adam, AdamW, NAdam, RAdam: ``exp_avg_sq``, bias-corrected; RMSprop: ``square_avg``):
      eps, and adaptive_rms = sqrt(mean over the group's elements of the second moment), the gradient scale the
      denominator sqrt(v) + eps normalises by (one fused pass over the state, its values on the device until the
      step's one transfer).
"""

from __future__ import annotations

import functools
import gc
import math
import weakref
from typing import TYPE_CHECKING

import torch

from .base import Observation, Probe
from .gradients import by_device_dtype, nonnegative_sums

if TYPE_CHECKING:
    from .session import ProbeSession

MAX_NAMED = 16  # parameters named per step: enough to point at the module, bounded on huge models


class OptimizerState(Probe):
    name = "optimizer"

    def __init__(self) -> None:
        self._layout: tuple[int, ...] | None = None
        self._outside: list[tuple[str, object]] = []
        self._foreign: list[object] = []
        self._first_lr: dict[int, float] = {}
        self._start_lr: dict[int, float] = {}
        self._start_steps: float | None = None
        self._members_due = False  # set where the groups' layout is (re)read
        self._schedulers: list[weakref.ref] | None = None  # found once, when a scheduler is first seen attached

    def setup(self, session: "ProbeSession") -> None:
        self._layout = None
        self._schedulers = None
        opt = session.optimizer
        # the lr each group has when the watch opens: what the optimizer was built with (or a scheduler's first
        # value), before the loop's first step sets anything by hand
        self._start_lr = {} if opt is None else {i: _number(g.get("lr")) for i, g in enumerate(opt.param_groups)}
        self._start_steps = None if opt is None else _state_steps(opt)

    def _refresh(self, session: "ProbeSession") -> None:
        """Recompute which parameters sit outside every group when the groups change (``add_param_group``
        after the watch started). Whether they are trainable is read at each observation: a part
        unfrozen mid-run (requires_grad set later) must count from then on."""
        opt = session.optimizer
        layout = tuple(len(g["params"]) for g in opt.param_groups)
        if layout == self._layout:
            return
        self._layout = layout
        self._members_due = True
        in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
        self._outside = [(n, p) for n, p in session.model.named_parameters() if id(p) not in in_groups]
        own = {id(p) for p in session.model.parameters()}
        self._foreign = [p for g in opt.param_groups for p in g["params"] if id(p) not in own]

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        opt = session.optimizer
        if opt is None or not session.due(obs.step):
            return
        self._refresh(session)
        rows: list[tuple[str, str, float]] = []
        attached = hasattr(opt.step, "_wrapped_by_lr_sched")
        if attached and self._schedulers is None:
            self._schedulers = [weakref.ref(s) for s in schedulers_of(opt)]
        for i, g in enumerate(opt.param_groups):
            target = str(g.get("name") or f"group{i}")
            lr = _number(g.get("lr"))
            first = self._first_lr.setdefault(i, lr)
            start = self._start_lr.setdefault(i, first)
            trainable = [p for p in g["params"] if p.requires_grad]
            numel = float(sum(p.numel() for p in trainable))
            frozen = [p for p in g["params"] if not p.requires_grad] if len(trainable) < len(g["params"]) else []
            rows += [(target, "lr", lr), (target, "lr_initial", _number(g.get("initial_lr", first))),
                     (target, "lr_start", start),
                     (target, "params", float(len(trainable))), (target, "numel", numel),
                     (target, "frozen", float(len(frozen))),
                     # frozen tensors the optimizer holds state for: it stepped them once (a resumed run, a part
                     # frozen again after training), so they were meant to train
                     (target, "frozen_stepped", float(sum(bool(opt.state.get(p)) for p in frozen))),
                     (target, "weight_decay", _number(g.get("weight_decay", 0.0))),
                     (target, "decoupled", float(_decoupled(opt, g))), (target, "index", float(i)),
                     (target, "decay_per_step", _decay_per_step(opt, g, lr))]
            peak = g["max_lr"] if "max_lr" in g else self._scheduler_peak(i)  # OneCycleLR's is in the group
            if peak is not None:
                rows.append((target, "lr_schedule_peak", _number(peak)))
        if self._members_due:
            self._members_due = False
            names = {id(p): n for n, p in session.model.named_parameters()}
            rows += [(names[id(p)], "optimizer_group", float(i)) for i, g in enumerate(opt.param_groups)
                     if _number(g.get("weight_decay", 0.0)) > 0 for p in g["params"]
                     if p.requires_grad and id(p) in names]
        # torch's LR schedulers wrap optimizer.step when they are built on it: whether any schedule drives this run
        rows.append(("optimizer", "scheduler_attached", float(attached)))
        rows.append(("optimizer", "steps_called", float(session.optimizer_steps)))
        if self._start_steps is not None:
            rows.append(("optimizer", "state_steps_at_start", self._start_steps))
            self._start_steps = None
        trainable = [(n, p) for n, p in self._outside if p.requires_grad]
        with_grad = [(n, p) for n, p in trainable if p.grad is not None]
        rows += [("outside", "trainable", float(len(trainable))), ("outside", "with_grad", float(len(with_grad))),
                 ("outside", "numel_with_grad", float(sum(p.numel() for _, p in with_grad)))]
        rows += [(n, "outside_optimizer_numel", float(p.numel())) for n, p in with_grad[:MAX_NAMED]]
        rows += [("foreign", "tensors", float(len(self._foreign))),
                 ("foreign", "with_grad", float(sum(p.grad is not None for p in self._foreign)))]
        session.buffer.extend(obs.step, self.name, rows)
        if session.full:
            self._second_moments(session, obs.step)

    def _scheduler_peak(self, group: int) -> object | None:
        """The peak lr a scheduler of the optimizer keeps for this group on itself (CyclicLR's ``max_lrs``)."""
        for ref in self._schedulers or ():
            peaks = getattr(ref(), "max_lrs", None)
            if isinstance(peaks, (list, tuple)) and group < len(peaks):
                return peaks[group]
        return None

    def _second_moments(self, session: "ProbeSession", step: int) -> None:
        """eps and the RMS of the bias-corrected second moment per group (see the module docstring). The per-parameter
        sums and Adam's step counts (tensors, maybe on the device) reach the host with the step's other values."""
        opt = session.optimizer
        for i, g in enumerate(opt.param_groups):
            eps = g.get("eps")
            got = [m for m in (_moment(opt.state.get(p, {})) for p in g["params"]) if m is not None]
            if not isinstance(eps, (int, float)) or not got:
                continue
            beta2 = _number((g.get("betas") or (0.0, float("nan")))[1]) if got[0][1] is not None else None
            if beta2 is not None and not 0.0 <= beta2 < 1.0:
                continue
            moments = [v for v, _ in got]
            groups = by_device_dtype(moments)
            with torch.no_grad():
                sums = [nonnegative_sums([moments[k] for k in idx]) for idx in groups]
            counts = [t for _, t in got] if beta2 is not None else []
            target = str(g.get("name") or f"group{i}")
            session.buffer.extend(step, self.name, [(target, "eps", float(eps))])
            session.buffer.later(step, self.name, [*sums, *counts], functools.partial(
                _adaptive_rms, target, [k for idx in groups for k in idx], sum(v.numel() for v in moments), beta2))


def _state_steps(opt: object) -> float:
    """The step count an optimizer's state holds (the first parameter's with one; 0 when none keeps a count)."""
    for state in getattr(opt, "state", {}).values():
        step = state.get("step") if isinstance(state, dict) else None
        if step is not None:
            return _number(step)
    return 0.0


def _moment(state: dict) -> tuple[torch.Tensor, object] | None:
    """One parameter's running second moment and its step count (Adam's family, for the bias correction; None for
    RMSprop, which has none)."""
    v = state.get("exp_avg_sq")
    if isinstance(v, torch.Tensor) and v.numel() and state.get("step") is not None:
        return v, state["step"]
    v = state.get("square_avg")
    return (v, None) if isinstance(v, torch.Tensor) and v.numel() else None


def _adaptive_rms(target: str, order: list[int], numel: int, beta2: float | None,
                  floats: list[float]) -> list[tuple[str, str, float]]:
    """sqrt(mean of v / (1 - beta2^t)) from the per-parameter sums (in `order`) and step counts."""
    n = len(order)
    sums, counts = floats[:n], floats[n:]  # no counts without a bias correction (beta2 None: RMSprop)
    total = 0.0
    for k, v in zip(order, sums):
        corr = 1.0 if beta2 is None else 1.0 - beta2 ** counts[k]
        if not corr > 0:
            return []
        total += v / corr
    return [(target, "adaptive_rms", math.sqrt(total / numel) if total >= 0 else float("nan"))]


def _decoupled(opt: object, group: dict) -> bool:
    """Decay applied to the weights (AdamW, Adam(decoupled_weight_decay=True), Lion, ...) rather than an L2 term
    added to the gradient before the optimizer's normalisation."""
    if group.get("decoupled_weight_decay"):
        return True
    return type(opt).__name__ in ("AdamW", "Lion", "LAMB", "Lamb", "Adafactor", "FusedAdam", "DecoupledAdamW")


def _decay_per_step(opt: object, group: dict, lr: float) -> float:
    """The share of the weights the decay alone removes per optimizer step where the settings fix it and the lr
    does not decide it: SGD's L2 term, lr * wd * (1 - dampening) / (1 - momentum) once the momentum buffer has
    built up (an lr too high for SGD inflates it only at lr ~ 10 with a usual wd). NaN elsewhere: decoupled
    decay's lr * wd is large whenever the lr is (against Adam's own step of ~lr the decay weighs wd * |w|, read
    per scalar by temperature_decayed), and Adam's or RMSprop's L2 term is normalised with the gradient
    (decay_dominates_gradient reads it against the gradient)."""
    wd = _number(group.get("weight_decay", 0.0))
    if not wd or wd != wd:
        return 0.0
    if type(opt).__name__ == "SGD" and not _decoupled(opt, group):
        m, d = _number(group.get("momentum", 0.0)), _number(group.get("dampening", 0.0))
        return lr * wd * (1.0 - d) / (1.0 - m) if 0.0 <= m < 1.0 else float("nan")
    return float("nan")


def schedulers_of(optimizer: object) -> list:
    """The torch LR schedulers built on this optimizer (one scan of the live objects: call it once)."""
    from torch.optim.lr_scheduler import LRScheduler

    # type(o), not isinstance: isinstance reads `__class__`, which some lazy module objects answer with a warning
    return [o for o in gc.get_objects()
            if issubclass(type(o), LRScheduler) and getattr(o, "optimizer", None) is optimizer]


def _number(x: object) -> float:
    """An lr may be a float or a 0-d tensor (capturable / compiled optimizers)."""
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
