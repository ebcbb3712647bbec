"""`attach` / `ProbeSession`: scoped instrumentation of any `torch.nn.Module`.

Schedule. Cheap work runs on steps where ``step % every == 0``; expensive work (recomputed SDPA
weights, MultiheadAttention per-head weights, embedding spectra, pairwise latent cosines, norm
scales, watched outputs) where ``step % expensive_every == 0`` — step 0 always — or, with
``expensive_every=None``, spaced so that it costs at most `expensive_budget` of the median step time
(`probes.schedule`); expensive steps also get the cheap work. Forward hooks run before `observe`
reports the step, so they schedule on the session's prediction of the step in flight: the last
observed step + 1 (or `set_step`); their values wait as a few reduced scalars and are stamped with
the step given to the next `observe`.
"""

from __future__ import annotations

import contextlib
import traceback
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from . import coverage as _coverage
from ._hooks import SAVING, HookSet
from ._records import MAX_ROWS, RecordBuffer
from ._scope import ForwardScope
from .base import Observation, Probe
from .batch_drift import BatchDrift
from .batch_mixing import BatchMixing
from .collapse import Collapse
from .contrastive import Contrastive
from .entropy import SoftmaxEntropy
from .forward_weights import ForwardWeights
from .gradients import GradientFlow
from .graph_leaves import GraphLeaves
from .latents import LatentStats
from .loss_split import LossSplit
from .optimizer import OptimizerState
from .pairs_first import PairsFirst
from .schedule import FULL_EVERY, PROBE_BUDGET, ExpensiveSchedule, FullSchedule

PROBES: dict[str, type[Probe]] = {
    "latent_stats": LatentStats,
    "gradient_flow": GradientFlow,
    "softmax_entropy": SoftmaxEntropy,
    "loss_split": LossSplit,
    "collapse": Collapse,
    "optimizer": OptimizerState,
    "contrastive": Contrastive,
    "batch_mixing": BatchMixing,
    "pairs_first": PairsFirst,
    "batch_drift": BatchDrift,
    "graph_leaves": GraphLeaves,
    "forward_weights": ForwardWeights,
}

# the probes with work on the expensive schedule (named in the coverage line of that schedule)
EXPENSIVE = ("softmax_entropy", "collapse", "latent_stats", "contrastive", "forward_weights")

PRESETS: dict[str, tuple[str, ...]] = {
    "cheap": ("gradient_flow", "loss_split", "optimizer", "contrastive", "batch_mixing", "pairs_first",
              "graph_leaves", "batch_drift"),
    "all": ("latent_stats", "gradient_flow", "softmax_entropy", "loss_split", "collapse", "optimizer", "contrastive",
            "batch_mixing", "pairs_first", "graph_leaves", "batch_drift", "forward_weights"),
}


class ProbeSession:
    """Hooks, schedule and records of one instrumented training run. Use through `attach`.

    Args:
        model: any module; parameters are read by ``named_parameters()`` names.
        optimizer: if given, a step post-hook computes update/param right after
            ``optimizer.step()``, which makes `after_step` optional.
        probes: ``"cheap"``, ``"all"``, or a list of probe names / `Probe` instances.
        every, expensive_every: the schedule (see module docstring); ``expensive_every=None``: under
            `expensive_budget` (default `probes.schedule.PROBE_BUDGET`).
        readings: ``(observations, settle)`` the rules' persistence gate needs (see `probes.schedule`):
            bounds the budget's spacing; None: the spacing never widens past the fixed default.
        latents: parameter names for the latent probe (default: names matching a latent/query
            pattern, see `probes.latents.LATENT_PATTERN`).
        outputs: ``{"label": "module.path"}`` module outputs to measure for collapse.
        strict: re-raise errors raised inside probes; by default they are counted (probe
            ``session``, metric ``errors_count``) and kept in `errors`, so training continues.
        train_only: ignore forwards run with autograd disabled (evaluation loops).
        max_records: bound on the record rows kept in memory; older steps are thinned beyond it
            (see `probes._records.MAX_ROWS`); ``None`` keeps everything.
        spill: directory where thinned rows are written first (parquet with pyarrow, else csv.gz).
        full_every: the gradient probe's full measurement (param norms, zero-gradient shares, update/param)
            on every measured step of the first 50, then sparser up to one in `full_every` (as sparse as the
            rules' end window allows, `probes.schedule.FullSchedule`) and on expensive steps; the model's grad
            norm on every measured step (default `probes.schedule.FULL_EVERY`; 1: every step).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        probes: str | Sequence[str | Probe] = "all",
        every: int = 1,
        expensive_every: int | None = 10,
        latents: Sequence[str] | None = None,
        outputs: Mapping[str, str] | None = None,
        strict: bool = False,
        train_only: bool = True,
        start_step: int = 0,
        max_records: int | None = MAX_ROWS,
        spill: str | None = None,
        expensive_budget: float | None = None,
        readings: tuple[int, float] | None = None,
        full_every: int = FULL_EVERY,
    ) -> None:
        if every < 1 or (expensive_every is not None and expensive_every < 1):
            raise ValueError("every and expensive_every must be >= 1")
        self.model = model
        self.optimizer = optimizer
        self.every = int(every)
        self.schedule = ExpensiveSchedule(
            None if expensive_every is None else int(expensive_every),
            (PROBE_BUDGET if expensive_budget is None else expensive_budget) if expensive_every is None else None,
            readings=readings[0] if readings else None, settle=readings[1] if readings else None,
            updates=self._model_updates)
        self.full_schedule = FullSchedule(full_every)
        self.full = True  # the step being observed gets the full gradient measurement (set by `observe`)
        self.strict = strict
        self.train_only = train_only
        self.probes: dict[str, Probe] = _build_probes(probes, latents, outputs)
        self.hooks = HookSet()
        self.buffer = RecordBuffer(max_records, spill)
        self.errors: list[str] = []
        self.scratch: dict[int, Any] = {}  # per-call state shared between a pre-hook and its hook
        self.module_names: dict[int, str] = {}
        self.scope: ForwardScope | None = None
        self.module_calls = _coverage.ModuleCalls({})
        self.steps = {"observed": 0, "cheap": 0, "expensive": 0, "full": 0}
        self._hint = int(start_step)  # step the next forward belongs to
        self._last_step: int | None = None
        self._stepped = True  # probes' after_step already ran for the last observation
        self.optimizer_steps = 0  # every step of the attached optimizer (its post-hook), observed or not
        self._open = False
        self._observing: int | None = None  # step being observed, while `observe` runs
        self.closing_on_error = False

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> "ProbeSession":
        if self._open:
            return self
        self.module_names = {id(m): n for n, m in self.model.named_modules()}
        self.scope = None
        self._open = True
        try:
            self.hooks.on_remove(SAVING.register(self.model))  # torch.save(model) without the watch's hooks
            for probe in self.probes.values():
                probe.setup(self)
            if self.scope is not None:  # some probe looks inside the forward: count module calls there too
                self.module_calls.names = self.module_names
                self.scope.add(self.module_calls.counting)
            if self.optimizer is not None:
                self.hooks.optimizer_post_hook(self.optimizer, self._optimizer_post_hook)
        except BaseException:
            self._open = False
            self.hooks.remove()
            raise
        return self

    def close(self, error: bool = False) -> None:
        """Remove every hook and patch; finish a pending update measurement (dropped when
        `error`: the step it belongs to may never have run). Idempotent."""
        if not self._open:
            return
        self._open = False
        self.closing_on_error = error
        try:
            for probe in self.probes.values():
                with self.guard(probe.name):
                    probe.close(self)
            if self.buffer.has_pending:
                self.buffer.commit_pending(self._hint)
            self.buffer.flush()
        finally:
            self.hooks.remove()
            self.scratch.clear()
            self.module_names = {}

    def __enter__(self) -> "ProbeSession":
        return self.open()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(error=exc_type is not None)

    @property
    def is_open(self) -> bool:
        return self._open

    # -- user calls --------------------------------------------------------------------------
    def observe(
        self,
        step: int,
        losses: Mapping[str, Any] | None = None,
        weights: Mapping[str, float] | None = None,
        chance: Mapping[str, float] | None = None,
        embeddings: Mapping[str, torch.Tensor] | None = None,
        logits: Mapping[str, torch.Tensor] | None = None,
        batch_size: int | None = None,
        extras: Mapping[str, Any] | None = None,
        targets: torch.Tensor | None = None,
    ) -> None:
        """Report step `step`: call after ``loss.backward()`` and before ``optimizer.step()``."""
        step = int(step)
        if not self._stepped:  # previous step's update not measured yet (no hook, no after_step)
            self._run_after_step()
        obs = Observation(
            step=step,
            losses=losses or {},
            weights=weights or {},
            chance=chance or {},
            embeddings=embeddings or {},
            logits=logits or {},
            batch_size=batch_size,
            extras=extras or {},
            targets=targets,
        )
        self._last_step = step
        self._hint = step
        self._observing = step
        expensive = self.due(step, expensive=True)
        self.schedule.observed(step, expensive)
        measured = self.due(step)
        self.full = measured and self.full_schedule.due(expensive)
        self.steps["observed"] += 1
        self.steps["cheap"] += measured
        self.steps["expensive"] += expensive
        self.steps["full"] += self.full
        try:
            # `guard`'s work written out: no context manager per probe and step on the per-step path
            try:
                self.buffer.commit_pending(step)
            except Exception as exc:
                self._failed("session", exc)
            for probe in self.probes.values():
                try:
                    probe.observe(self, obs)
                except Exception as exc:
                    self._failed(probe.name, exc)
            try:
                # every value of this step reaches the host in one transfer per device, on CUDA without
                # waiting: the rows land at a later flush or read (probes._records.RecordBuffer.flush)
                self.buffer.flush(wait=False)
            except Exception as exc:
                self._failed("session", exc)
        finally:
            self._observing = None
            self.schedule.finished(step, expensive)
        self._stepped = False
        self._hint = step + 1

    def after_step(self, step: int | None = None) -> None:
        """Call after ``optimizer.step()`` (optional when `attach` got the optimizer)."""
        if not self._stepped:
            self._run_after_step()
        if step is not None:
            self._hint = int(step) + 1

    def set_step(self, step: int) -> None:
        """Declare the step the next forward belongs to (hooks schedule on it)."""
        self._hint = int(step)

    def watch_outputs(self, outputs: Mapping[str, str]) -> None:
        """Measure collapse of module outputs: ``{"perceiver_latents": "vision.perceiver"}``."""
        if not self._open:
            raise RuntimeError("watch_outputs needs an open session")
        probe = self.probes.get("collapse")
        if not isinstance(probe, Collapse):
            probe = self.probes["collapse"] = Collapse()
        probe.outputs.update(outputs)
        probe.watch(self, outputs)

    def forward_scope(self) -> ForwardScope:
        """The scope around the model's forward on expensive steps (created by the first probe that
        asks for it; the cheap preset registers no forward hook at all)."""
        if self.scope is None:
            self.scope = ForwardScope(self.hooks, self.model, lambda: self.due(self._hint, expensive=True),
                                      on_start=self._forward_started)
        return self.scope

    @property
    def records(self) -> pd.DataFrame:
        """Long DataFrame: step (int), probe, target, metric (str), value (float). Readings a probe holds to
        compute over several steps at once (`probes.contrastive.BATCH_STEPS`: contrastive, collapse, softmax_entropy,
        latent_stats) are computed first."""
        for probe in self.probes.values():
            drain = getattr(probe, "drain", None)
            if callable(drain):
                with self.guard(probe.name):
                    drain(self)
        return self.buffer.frame()

    def coverage(self) -> dict:
        """What the probes observed and what they could not: attention modules seen vs present,
        modules that ran only under ``no_grad``, watched outputs that never fired, frozen parameters
        (by module), compiled modules, steps measured and skipped by the schedule, probe errors."""
        records = self.records
        calls = self.module_calls.calls
        out: dict[str, Any] = {
            "steps_observed": self.steps["observed"],
            "steps_measured": self.steps["cheap"],
            "steps_measured_expensive": self.steps["expensive"],
            "steps_skipped_by_schedule": self.steps["observed"] - self.steps["cheap"],
            "expensive_probes_ran": self.schedule.describe(self.steps["observed"],
                                                           [p for p in EXPENSIVE if p in self.probes]),
            "forwards_inspected": self.scope.forwards if self.scope is not None else 0,
        }
        for probe in self.probes.values():
            fn = getattr(probe, "coverage", None)
            if callable(fn):
                out.update(fn(self, records))
        out["frozen_modules"] = _coverage.frozen_modules(self.model)
        if self.scope is not None:
            out["modules_only_under_no_grad"] = _coverage.no_grad_only(self.model, calls)
            out["modules_never_called"] = _coverage.never_called(self.model, calls)
        else:
            out["module_calls"] = "not measured: no forward probe (cheap preset); see gradient_flow grad_is_none"
        out["compiled_modules"] = _coverage.compiled_modules(self.model)
        out["probe_errors"] = len(self.errors)
        out.update(self.buffer.thinning())
        return out

    # -- used by probes ----------------------------------------------------------------------
    @property
    def expensive_every(self) -> int:
        """The spacing of the expensive probes now (fixed, or the budget's latest)."""
        return self.schedule.spacing

    def due(self, step: int, expensive: bool = False) -> bool:
        if self.schedule.due(step):
            return True
        return (not expensive) and step % self.every == 0

    def hook_due(self, expensive: bool = False) -> bool:
        """Whether a forward hook should measure now (called on every forward: keep it cheap)."""
        if not self._open or (self.train_only and not torch.is_grad_enabled()):
            return False
        return self.due(self._hint, expensive)

    @contextlib.contextmanager
    def guard(self, probe: str) -> Iterator[None]:
        """Keep a probe failure from breaking training (unless strict); count it instead."""
        try:
            yield
        except Exception as exc:
            self._failed(probe, exc)

    def _failed(self, probe: str, exc: Exception) -> None:
        """A probe raised (inside `guard`, or in the loops of `observe` / `after_step`): re-raised when strict,
        else counted and kept."""
        if self.strict:
            raise exc
        self.errors.append(f"step {self._hint} {probe}: {type(exc).__name__}: "
                           f"{exc}\n{traceback.format_exc(limit=3)}")
        if self._observing is not None:
            self.buffer.add(self._observing, "session", probe, "errors_count", 1.0)
        else:  # inside a forward hook: stamped with the step of the next observe
            self.buffer.defer("session", probe, "errors_count", 1.0)

    # -- internals ---------------------------------------------------------------------------
    def _forward_started(self) -> None:
        if not self.train_only or torch.is_grad_enabled():
            self.schedule.forward_started()

    def _model_updates(self) -> list[float]:
        probe = self.probes.get("gradient_flow")
        return list(getattr(probe, "model_update", []))

    def _optimizer_post_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.optimizer_steps += 1
        if not self._stepped:
            self._run_after_step()

    def _run_after_step(self) -> None:
        self._stepped = True
        for probe in self.probes.values():
            try:
                probe.after_step(self)
            except Exception as exc:
                self._failed(probe.name, exc)


def attach(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    probes: str | Sequence[str | Probe] = "all",
    every: int = 1,
    expensive_every: int | None = 10,
    **kwargs: Any,
) -> ProbeSession:
    """Open a `ProbeSession` on `model`; use as ``with attach(model, ...) as session:``.

    Hooks are registered immediately and removed when the ``with`` block exits (also through an
    exception) or on `ProbeSession.close`. See `ProbeSession` for the keyword arguments.
    """
    return ProbeSession(model, optimizer, probes, every, expensive_every, **kwargs).open()


def _build_probes(
    spec: str | Sequence[str | Probe],
    latents: Sequence[str] | None,
    outputs: Mapping[str, str] | None,
) -> dict[str, Probe]:
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown preset {spec!r}; presets: {sorted(PRESETS)}")
        spec = PRESETS[spec]
    out: dict[str, Probe] = {}
    for item in spec:
        if isinstance(item, Probe):
            out[item.name] = item
            continue
        if item not in PROBES:
            raise ValueError(f"unknown probe {item!r}; probes: {sorted(PROBES)}")
        if item == "latent_stats":
            out[item] = LatentStats(latents=latents)
        elif item == "collapse":
            out[item] = Collapse(outputs=outputs)
        else:
            out[item] = PROBES[item]()
    if outputs and "collapse" not in out:
        out["collapse"] = Collapse(outputs=outputs)
    if latents and "latent_stats" not in out:
        out["latent_stats"] = LatentStats(latents=latents)
    return out
