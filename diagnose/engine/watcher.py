"""`diagnose.watch`: the probes, the rule catalogue and the report around *your* training loop.

    import diagnose
    with diagnose.watch(model, optimizer, out="runs/mine", alarm="warn") as w:
        for step, batch in enumerate(loader):
            ...; loss.backward()
            w.observe(step, losses={"clip": l_clip, "mrl": l_mrl, "total": loss},
                      weights={"clip": 0.25, "mrl": 1.0}, embeddings={"image": img, "text": txt},
                      logits=logits, batch_size=B)          # or candidates=N when features are gathered
            optimizer.step()

Leaving the block (also through an exception or Ctrl-C) writes the same run directory as the CLI
(report.md with root causes first, plots, summary.json, records); `diagnose report DIR` rebuilds it.
The plots come last, from a detached child process (`plots=`, diagnose.engine.rundir).
While the run goes on, the record rules are evaluated on the records so far on a schedule, and an
error finding raises an alarm the first time it holds (and is news: `Rule.alarm`): a log line on the
`diagnose` logger (`alarm="warn"`), a `DiagnoseAlarm` raised from `observe` (`"raise"`), or your
function called with the `Alarm` (to stop or checkpoint). The library never prints.

With a budget (the default) the rules run in a child process (`diagnose.engine.rule_server`; a worker thread
where no process can start), so the training thread pays only for shipping the new records; an alarm
is delivered by the first `observe` after its evaluation ends, stamped with the step its records went
up to (`Alarm.step`) and the step that delivered it (`Alarm.delivered_at`). With ``budget=None`` (every
`evaluate_every` steps whatever it costs) or ``background=False`` the rules run inside `observe`.
"""

from __future__ import annotations

import math
import platform
import shlex
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from probes import ProbeSession
from probes.optimizer import _number
from probes.schedule import PROBE_BUDGET, ExpensiveSchedule

from ..core.analysis import analyse
from ..core.rules import RunContext, rank_root_causes
from ..core.rules.data import PROBE
from ..core.rules.gradients import SETTLED_CUMULATIVE_UPDATE
from ..core.rules.persistence import PERSIST_MIN_OBS
from ..core.summary import DEFAULT_MAX_LOGIT_SCALE, RunSummary, Summary, end_of_run
from .ablation_env import AblationControl
from .datasignal import data_signal
from .monitor import Alarm, RuleMonitor
from .online import (
    EVALUATE_BUDGET,
    EVALUATE_EVERY,
    STEP_TIME_WINDOW,
    AlarmPolicy,
    DiagnoseAlarm,
    OnlineRules,
    alarm_line,
    log,
)
from .ranks import RankSync
from .retrieval import retrieval_metrics
from .rundir import PLOT_MODES, write_run_dir

__all__ = ["EVALUATE_BUDGET", "EVALUATE_EVERY", "DiagnoseAlarm", "Watch", "alarm_line", "canonical_losses",
           "canonical_name",
           "log", "watch"]


def _scalar(x: Any) -> float | torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return float(x)


def canonical_name(name: str, n_components: int) -> str:
    """Record names of loss components: ``total`` for the objective, ``loss_<name>`` for components; a
    lone loss is the contrastive loss (``loss_contrastive``)."""
    key = str(name).strip()
    if key in ("total", "loss"):
        return "total" if n_components > 1 else "loss_contrastive"
    return key if key.startswith("loss_") else f"loss_{key}"


def canonical_losses(losses: Mapping[str, Any]) -> dict[str, Any]:
    return {canonical_name(k, len(losses)): _scalar(v) for k, v in losses.items()}


def with_named_embeddings(embeddings: Mapping[str, Any] | None, **named: torch.Tensor | None) -> dict[str, Any]:
    """`embeddings` with `image_embeds=` / `text_embeds=` under their keys; a key given both ways is a
    ValueError naming it."""
    out = dict(embeddings or {})
    for key, value in named.items():
        if value is None:
            continue
        if key in out:
            raise ValueError(f"observe(): {key}_embeds= and embeddings[{key!r}] both given; pass one")
        out[key] = value
    return out


class Watch(OnlineRules):
    """One watched training run. Use through `diagnose.watch`."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, out: str | Path | None = None,
                 *, name: str = "run", alarm: AlarmPolicy = "warn", probes: str | Sequence = "all", every: int = 1,
                 expensive_every: int | None = None, evaluate_every: int | None = EVALUATE_EVERY,
                 budget: float | None = EVALUATE_BUDGET, probe_budget: float = PROBE_BUDGET,
                 batch_size: int | None = None,
                 candidates: int | None = None, loss_weights: Mapping[str, float] | None = None,
                 max_logit_scale: float | None = DEFAULT_MAX_LOGIT_SCALE, latents: Sequence[str] | None = None,
                 outputs: Mapping[str, str] | None = None, max_records: int | None = None,
                 spill: str | Path | None = None,
                 background: bool = True, session_kwargs: Mapping[str, Any] | None = None,
                 plots: str = "background"):
        if not (alarm in ("warn", "raise", "off", None) or callable(alarm)):
            raise ValueError(f"alarm={alarm!r}: expected 'warn', 'raise', 'off' or a function taking an Alarm")
        self.model, self.optimizer, self.name = model, optimizer, name
        self.out = Path(out) if out is not None else None
        if budget is not None and not (isinstance(budget, (int, float)) and 0 < budget and math.isfinite(budget)):
            raise ValueError(f"budget={budget!r}: expected a positive share of the step time (e.g. 0.02) or None")
        self.alarm_policy, self.evaluate_every, self.budget = alarm, evaluate_every, budget
        # rules outside the training thread: only with a budget (budget=None promises evaluation at fixed steps)
        self.background = bool(background) and budget is not None
        if plots not in PLOT_MODES:
            raise ValueError(f"plots={plots!r}: expected one of {', '.join(PLOT_MODES)}")
        self.plots = plots  # the run directory's PNGs: after close, in a child process (rundir)
        # under `diagnose ablate -- python train.py`: out, name and alarms set by the runner, a fix applied
        self.control = AblationControl.claim(self)
        self._closed = False
        self._pool: ThreadPoolExecutor | None = None  # fallback when no rule process can run
        self._server = None  # diagnose.engine.rule_server.RuleClient (the process is shared by this process's watches)
        self._server_error: str | None = None
        self._server_note_logged = False
        self._pending: tuple[Future, int, int] | None = None  # (evaluation, records' step, observed count)
        self.batch_size, self.candidates = batch_size, candidates
        self._pool_from: str | None = None  # where batch_size / candidates came from when the user gave neither
        self.loss_weights = dict(loss_weights or {})
        self.max_logit_scale = max_logit_scale
        bound = {k: v for k, v in (("max_records", max_records), ("spill", str(spill) if spill else None)) if v}
        # expensive probes under `probe_budget` of the step time unless `expensive_every` fixes them, never
        # sparser than the persistence gate needs to decide (probes.schedule)
        self.session = ProbeSession(model, optimizer, probes, every, expensive_every, latents=latents, outputs=outputs,
                                    expensive_budget=probe_budget,
                                    readings=(PERSIST_MIN_OBS, SETTLED_CUMULATIVE_UPDATE),
                                    **{**bound, **dict(session_kwargs or {})})
        self.monitor = RuleMonitor(self._context())
        self.dist = RankSync.from_env(model)  # under torchrun: rank 0 decides alarms and writes (diagnose.engine.ranks)
        if self.dist is not None and expensive_every is None:  # every rank the same steps: a fixed spacing
            self.session.schedule = ExpensiveSchedule()
        self.retrieval: dict[str, float] = {}
        self.data_signal_result: dict | None = None  # set by data_signal()
        self.summary: Summary | None = None
        self._observed, self._since_eval, self._next_eval = 0, 0, evaluate_every or 0
        self._step_time, self._eval_time, self._eval_in_last, self._t_last = 0.0, 0.0, 0.0, None
        # recent step intervals: their median is the step time the evaluation budget is measured against
        # (a median, so a pause for validation or checkpointing does not make evaluation more frequent)
        self._intervals: deque[float] = deque(maxlen=STEP_TIME_WINDOW)
        self._start = time.perf_counter()
        self.last_step: int | None = None
        self.interrupted: str | None = None
        self.listeners: list[Callable[[Watch, int, list[Alarm]], Any]] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Watch:
        self.session.open()
        if self.background and self.evaluate_every and (self.dist is None or self.dist.rank == 0):
            self._start_server()  # its start-up (imports) overlaps the first training steps
        if self.control is not None:
            self.control.setup(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.interrupted = ("interrupted (Ctrl-C)" if exc_type is KeyboardInterrupt
                                else f"ended by {exc_type.__name__}: {exc}")
        self.close()

    def close(self) -> Summary | None:
        """Remove every probe; with `out`, evaluate the whole run and write the run directory. Under
        ``alarm="raise"``, an alarm whose evaluation ended only now is raised after the directory is
        written (unless the block is already ending by an exception). Closing again is a no-op."""
        if self._closed:
            return self.summary
        self._closed = True
        late = self._finish_background()
        self.session.close(error=self.interrupted is not None)
        for listener in self.listeners:  # scalar sinks write the last steps' rows (diagnose.integrations)
            if hasattr(listener, "watch_closed"):
                listener.watch_closed(self)
        if self.out is not None and self.summary is None and (self.dist is None or self.dist.rank == 0):
            write_run_dir(self.out, self.result(), self.records.assign(run=self.name), plots=self.plots)
        if self.control is not None:
            self.control.close(self)
        if late and self.alarm_policy == "raise" and self.interrupted is None:
            raise DiagnoseAlarm(late[0])
        return self.summary

    def result(self) -> Summary:
        """The run's summary: verdict, findings and root causes from every record (computed once)."""
        if self.summary is None:
            self.summary = self._summarise()
        return self.summary

    # -- user calls --------------------------------------------------------------------------------
    def observe(self, step: int, losses: Mapping[str, Any] | None = None, weights: Mapping[str, float] | None = None,
                embeddings: Mapping[str, torch.Tensor] | None = None,
                logits: torch.Tensor | Mapping[str, torch.Tensor] | None = None, batch_size: int | None = None,
                candidates: int | None = None, inputs: torch.Tensor | None = None,
                chance: Mapping[str, float] | None = None,
                extras: Mapping[str, Any] | None = None, targets: torch.Tensor | None = None,
                image_embeds: torch.Tensor | None = None, text_embeds: torch.Tensor | None = None) -> list[Alarm]:
        """Report a step after ``loss.backward()`` and before ``optimizer.step()``; returns new alarms.

        `losses`: components by name (``total`` is the objective); `weights`: their weights in the
        total; `embeddings`: ``image``/``text`` (the vectors that enter the logits) and any other;
        `logits`: the image->text similarity matrix (or a dict of them); `batch_size`: rows this step;
        `candidates`: candidates each row is scored against when features are gathered across ranks
        (chance is ln(candidates)); `inputs`: the input features (B, T, D) or (B, D), for the
        shared-component check; `chance`: override the chance value per component; `targets`: the
        class index each logits row is trained toward (``torch.arange(B)`` for paired data), read
        against the logits' diagonal. `image_embeds` / `text_embeds`: the names CLIP outputs give them (Hugging
        Face's ``CLIPOutput``, our callbacks' step outputs), the same as ``embeddings={"image": ..., "text": ...}``.
        """
        if image_embeds is not None or text_embeds is not None:
            embeddings = with_named_embeddings(embeddings, image=image_embeds, text=text_embeds)
        self._time_step()
        self.batch_size = batch_size or self.batch_size
        self.candidates = candidates or self.candidates
        if not (self.batch_size or self.candidates):
            self._infer_pool(logits, embeddings)
        pool = self.candidates or self.batch_size
        losses = canonical_losses(losses or {})
        self.loss_weights.update({canonical_name(k, len(losses)): w for k, w in (weights or {}).items()})
        chance = {canonical_name(k, len(losses)): v for k, v in chance.items()} if chance is not None else (
            {k: math.log(pool) for k in losses if k != "total"} if pool and pool > 1 else {})
        emb = dict(embeddings or {})
        if inputs is not None:
            emb["input"] = inputs.detach()
        if isinstance(logits, torch.Tensor):
            logits = {"image_to_text": logits}
        extras = dict(extras or {})
        if self.optimizer is not None and "lr" not in extras:
            # None: an optimizer that sizes its own steps (Adafactor with relative_step=True) reads NaN
            extras["lr"] = _number(self.optimizer.param_groups[0].get("lr"))
        if self.dist is not None:
            extras.update(self.dist.step_extras(int(step), losses))
        elif "world_size" not in extras and torch.distributed.is_available() and torch.distributed.is_initialized():
            # a process group of one rank (RankSync records W > 1): its all_gather copies outside autograd too
            extras["world_size"] = float(torch.distributed.get_world_size())
        if self.control is not None:
            self.control.observe(self, int(step), {"logits": logits, "embeddings": emb, "extras": extras})
        self.session.observe(step, losses=losses, weights=dict(self.loss_weights), chance=chance, embeddings=emb,
                             logits=dict(logits or {}), batch_size=self.batch_size, extras=extras, targets=targets)
        self.last_step, self._observed = int(step), self._observed + 1
        new = self._maybe_evaluate(int(step)) if self.dist is None or self.dist.rank == 0 else []
        if self.dist is not None:  # every rank raises rank 0's alarms at the same step
            new = self.dist.agree(new)
            if self.dist.rank:
                self.monitor.alarms.extend(new)
        for a in new:
            a.delivered_at = int(step)
        for listener in self.listeners:  # scalar sinks (TensorBoard, W&B): diagnose.integrations
            listener(self, int(step), new)
        for a in new:
            self._raise_alarm(a)
        if self.control is not None:
            self.control.after_observe(self)  # at the ablation's step cap: closes and ends the script
        return new

    def after_step(self, step: int | None = None) -> None:
        """Call after ``optimizer.step()`` when no optimizer was given to `watch` (update/param)."""
        self.session.after_step(step)

    def evaluate_retrieval(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
        """Held-out R@1/5/10 (both directions) of paired embeddings; non-finite embeddings give NaN, never a score."""
        self.retrieval = retrieval_metrics(image, text)
        return self.retrieval

    def data_signal(self, image: torch.Tensor, text: torch.Tensor, step: int | None = None, **kwargs: Any):
        """Is there anything to learn? Paired input features (image (N, T, D) or pooled (N, D), text (N, Dt)),
        e.g. a few hundred training pairs: a closed-form linear map, held-out retrieval vs chance and a
        permutation test (`diagnose.engine.datasignal`); recorded, so the `no_data_signal` rule reads it. No
        training."""
        result = data_signal(image.detach().cpu(), text.detach().cpu(), **kwargs)
        at = step if step is not None else (self.last_step if self.last_step is not None else 0)
        self.session.buffer.extend(int(at), PROBE, result.rows())
        self.data_signal_result = result.to_dict()
        return result

    # -- what is known so far ----------------------------------------------------------------------
    @property
    def records(self) -> pd.DataFrame:
        return self.session.records

    @property
    def findings(self) -> list:
        return list(self.monitor.findings) if self.summary is None else self.summary.findings

    @property
    def alarms(self) -> list[Alarm]:
        return list(self.monitor.alarms)

    @property
    def root_causes(self) -> list[dict]:
        if self.summary is not None:
            return self.summary.runs[0].root_causes
        return rank_root_causes([f.to_dict() for f in self.monitor.findings], None)

    def coverage(self) -> dict:
        cov = getattr(self.session, "coverage", None)
        out = dict(cov()) if callable(cov) else {}
        out.setdefault("steps_observed", self._observed)
        return out

    def add_listener(self, fn: Callable[[Watch, int, list[Alarm]], Any]) -> None:
        """Call ``fn(watch, step, new_alarms)`` after every `observe` (see diagnose.integrations.scalars)."""
        self.listeners.append(fn)

    def _infer_pool(self, logits, embeddings) -> None:
        """Neither `batch_size` nor `candidates` given: the rows and columns of the logits (else the rows of the
        image embedding) are the batch and the candidates each row is scored against; the summary says so."""
        z = logits if isinstance(logits, torch.Tensor) else next(iter((logits or {}).values()), None)
        img = (embeddings or {}).get("image")
        if isinstance(z, torch.Tensor) and z.dim() == 2 and z.shape[1] > 1:
            self.batch_size, cols = int(z.shape[0]), int(z.shape[1])
            self.candidates = cols if cols != self.batch_size else None
            self._pool_from = f"the logits' shape ({self.batch_size}, {cols}): no batch_size given"
        elif isinstance(img, torch.Tensor) and img.dim() >= 2 and img.shape[0] > 1:
            self.batch_size = int(img.shape[0])
            self._pool_from = f"the image embedding's {self.batch_size} rows: no batch_size given"

    def _context(self) -> RunContext:
        opt = {}
        if self.optimizer is not None:
            g = self.optimizer.param_groups[0]
            # numbers for the summary's JSON: an lr may be a 0-d tensor (a capturable optimizer, or one that writes
            # a computed step size back into its group)
            opt = {k: _number(g[k]) for k in ("lr", "weight_decay") if k in g}
            if "initial_lr" in g:  # under an lr scheduler: the configured lr, not where the schedule ended (0)
                opt["lr"] = _number(g["initial_lr"])
        return RunContext(self.name, self.batch_size, self.candidates or self.batch_size, self.max_logit_scale,
                          dict(self.loss_weights), opt)

    def _summarise(self) -> Summary:
        records = self.records
        values = records[(records["probe"] == "loss_split") & (records["metric"] == "value")]
        history = [{"step": s, **g.groupby("target")["value"].mean().to_dict()} for s, g in values.groupby("step")]
        final, window = end_of_run(history)
        pool = self.candidates or self.batch_size
        run = RunSummary(
            name=self.name, kind="watch", steps=(self.last_step + 1) if self.last_step is not None else 0,
            batch_size=self.batch_size, candidates=pool, chance_loss=math.log(pool) if pool and pool > 1 else None,
            final_loss=final, final_window_steps=window, retrieval=dict(self.retrieval),
            seconds=round(time.perf_counter() - self._start, 2),
            extra={"loss_weights": dict(self.loss_weights), "max_logit_scale": self.max_logit_scale,
                   "optimizer": self._context().optimizer, "alarms": [{"step": a.step, "delivered_at": a.delivered_at,
                                                                       "id": a.finding.id, "target": a.finding.target}
                                                                      for a in self.alarms],
                   **({"world_size": self.dist.size, "rank": self.dist.rank} if self.dist is not None else {}),
                   **({"interrupted": self.interrupted} if self.interrupted else {}),
                   **({"batch_size_from": self._pool_from} if self._pool_from else {}),
                   **({"data_signal": self.data_signal_result} if self.data_signal_result else {})})
        summary = Summary([run], sections={"coverage": self.coverage()}, command=_command(),
                          environment=_environment())
        return analyse(summary, records.assign(run=self.name))


def _command() -> str:
    return " ".join(["python", *map(shlex.quote, sys.argv)]) if sys.argv and sys.argv[0] else ""


def _environment() -> dict[str, str]:
    return {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}


def watch(model: nn.Module, optimizer: torch.optim.Optimizer | None = None, out: str | Path | None = None,
          **kwargs: Any) -> Watch:
    """Watch a training run: ``with diagnose.watch(model, optimizer, out="runs/mine") as w: ...``.

    See `Watch` for the keyword arguments (name, alarm, probes, every, expensive_every, evaluate_every,
    budget (share of the step time the online rules may take, default 0.02; None: every `evaluate_every`
    steps whatever it costs), probe_budget (share of the step time the expensive probes may take when
    `expensive_every` is None, the default: 0.05, see probes.schedule),
    background (rules in a child process when there is a budget, default True),
    batch_size, candidates, loss_weights, max_logit_scale, latents, outputs, max_records, spill, plots
    ("background", the default: the report and summary.json are written at close and a detached child
    process renders the PNGs into the run directory; "inline": rendered before close returns; "deferred":
    none, `diagnose report OUT` renders them)).
    """
    # open now, so that `w = diagnose.watch(...)`; ...; `w.close()` works without a `with` block
    # (entering the block again is a no-op: the probes and the rule process start once)
    return Watch(model, optimizer, out, **kwargs).__enter__()
