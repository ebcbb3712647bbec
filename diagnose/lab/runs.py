"""Orchestration shared by the commands: resolve a config, train with callbacks, save a run."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from reference_models import AlignmentConfig, Callback, TrainResult, apply_scale, build_model, load_config, train

from ..core.analysis import analyse
from ..core.definitions import END_FRAC, END_MIN_POINTS, LEARNED_LOSS_FRACTION
from ..core.files import atomic_write_text, write_json
from ..core.provenance import command_line, environment
from ..core.summary import RunSummary, Summary, end_of_run
from ..engine.watcher import watch
from . import live
from .checkpoint_files import load_into, load_state_dict, save_checkpoint
from .data_cache import Say, StartProgress, prepare_images
from .executors import RUN_THREADS, job_threads
from .signal_inputs import sample_training_pairs


def resolve_config(config: str, sets: Sequence[str] | None, scale: str, seed: int | None,
                   say: Say | None = None, progress: StartProgress | None = None) -> AlignmentConfig:
    """The config with --set, --scale and --seed applied; an `images` source is encoded (and cached) here,
    reporting through `say` and `progress` (silent without them)."""
    cfg = apply_scale(load_config(config, list(sets or [])), scale)
    if seed is not None:
        cfg.seed = seed
    if cfg.dataset.source == "images":
        prepare_images(cfg, say, progress)
    return cfg


class ProgressCallback(Callback):
    def __init__(self, ticker):
        self.ticker = ticker

    def on_step_end(self, model, info):
        logged = info.loss.logged
        self.ticker.advance(1, status=f"loss_clip {logged['loss_clip']:.3f}  ln(B) {info.loss.chance:.3f}")


class EpochCheckpoints(Callback):
    """Per-epoch checkpoints (safetensors + resolved config)."""

    def __init__(self, out: Path, cfg: AlignmentConfig):
        self.out, self.cfg = out, cfg

    def on_epoch_end(self, model, epoch, step):
        save_checkpoint(self.out / f"checkpoint-epoch{epoch + 1}.safetensors", model, self.cfg, {"step": str(step + 1)})


@dataclass
class TrainedRun:
    """A finished reference training run, before it is summarised."""

    name: str
    cfg: AlignmentConfig
    result: TrainResult
    seconds: float
    threads: int | None = field(default=None)  # torch threads the run used, when pinned (`pinned_threads`)

    def summary(self, kind: str = "instrumented") -> RunSummary:
        r = self.result
        final, window = end_of_run(r.history)
        run = RunSummary(
            name=self.name, kind=kind, config=self.cfg.name, config_source=self.cfg.source or self.cfg.name,
            scale=self.cfg.scale, seed=self.cfg.seed, steps=r.steps, steps_per_epoch=r.steps_per_epoch,
            batch_size=self.cfg.dataset.batch_size, candidates=r.extra.get("candidates", self.cfg.dataset.batch_size),
            chance_loss=r.chance_loss,
            final_loss=final, final_window_steps=window, retrieval=dict(r.retrieval), seconds=round(self.seconds, 2),
            resolved_config=self.cfg.to_dict())
        if r.extra.get("world_size", 1) > 1:  # under torchrun: which rank's view this summary is
            run.extra.update({k: r.extra[k] for k in ("world_size", "rank")})
        if r.extra.get("settled"):  # a seed replica stopped once its verdict was settled
            run.extra["settled"] = r.extra["settled"]
        if r.extra.get("data_signal"):  # diagnose.engine.datasignal: is there anything to learn in the training pairs
            run.extra["data_signal"] = r.extra["data_signal"]
        if self.threads is not None:
            run.extra["threads"] = self.threads
        run.judge()
        return run


def run_training(cfg: AlignmentConfig, steps: int | None, epochs: int | None, device: str,
                 callbacks: Sequence[Callback], name: str | None = None) -> TrainedRun:
    start = time.perf_counter()
    result = train(cfg, steps=steps, epochs=epochs, device=device, callbacks=callbacks)
    return TrainedRun(name or cfg.name, cfg, result, time.perf_counter() - start)


def save_train_run(out: Path, run: TrainedRun) -> Summary:
    out.mkdir(parents=True, exist_ok=True)
    metrics = pd.DataFrame(run.result.history)
    atomic_write_text(out / "metrics.csv", metrics.to_csv(index=False))
    save_checkpoint(out / "model.safetensors", run.result.model, run.cfg, {"step": str(run.result.steps)})
    summary = Summary([run.summary(kind="train")], command=command_line(), environment=environment())
    write_json(out / "summary.json", summary.to_dict())
    return summary


def instrumented_summary(runs: Sequence[tuple[TrainedRun, pd.DataFrame]], kind: str = "instrumented"
                         ) -> tuple[Summary, pd.DataFrame]:
    """Summaries, verdicts, findings and root causes of instrumented runs, and their records in one frame."""
    records = pd.concat([recs.assign(run=run.name) for run, recs in runs], ignore_index=True)
    summaries = [run.summary(kind) for run, _ in runs]
    summary = Summary(summaries, command=command_line(), environment=run_environment([s.to_dict() for s in summaries]))
    return analyse(summary, records), records


def run_environment(runs: Sequence[dict]) -> dict[str, str]:
    """The environment of a report whose runs trained elsewhere (workers, Ray) or pinned their threads: the
    torch threads are the runs' own (`pinned_threads`), not the count of the process that writes the report."""
    env = environment()
    used = sorted({r["threads"] for r in runs if r.get("threads") is not None})
    if used:
        env["threads"] = ", ".join(map(str, used)) + " per run (pinned)"
    return env


@contextlib.contextmanager
def pinned_threads(threads: int | None = None):
    """torch's intra-op threads for one run: `threads`, else the executor's for the job running now, else
    RUN_THREADS; the process gets its count back after. A reference run's numbers depend on the count (a
    matmul's summation order does, and the perceiver near its margin turns those last bits into a different
    outcome: seed 0 partly learned on 1 thread, at chance on 2), so it never follows the machine's cores."""
    n = threads or job_threads() or RUN_THREADS
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


class ProbeCallback(Callback):
    """Feeds every training step to an open `diagnose.watch`: `observe` after backward, before the
    update; `after_step` after it (the optimizer is created inside train(), so update/param is
    measured here rather than through an optimizer hook)."""

    def __init__(self, watcher):
        self.watcher = watcher

    def on_step_end(self, model, info):
        self.watcher.after_step(info.step)

    def on_backward(self, model, info):
        loss = info.loss
        # the loss split sees what a training log would print (mrl_log_mode decides loss_mrl)
        logged = {k: v for k, v in loss.logged.items() if k in ("total", "loss_clip", "loss_mrl")}
        extras = {"logit_scale": float(model.logit_scale.detach().exp()), "lr": info.lr}
        if len(loss.mrl_dims) == 1:
            extras["mrl_dim"] = float(loss.mrl_dims[0])
        if "loss_mrl_all_dims" in loss.logged:
            extras["loss_mrl_all_dims"] = loss.logged["loss_mrl_all_dims"]
        extras.update(loss.distributed)  # gradient-scale check of a gathered loss (reference_models.distributed)
        self.watcher.observe(
            info.step, losses=logged, weights=loss.weights, chance={k: loss.chance for k in logged if k != "total"},
            embeddings={"image": info.image.detach(), "text": info.text.detach()},
                             inputs=info.tokens.detach().mean(dim=1),
            logits={"image_to_text": loss.logits.detach()}, batch_size=info.batch_size, extras=extras,
            candidates=loss.candidates or None)


SETTLE_MIN_STEPS = 20  # never settle before this: the loss and the alarms need some steps to mean anything
SETTLED_LOSS_FRACTION = LEARNED_LOSS_FRACTION / 2  # "learned, settled": the whole end window at half the bar
SETTLED_LOSS_ALARMS = {"loss_at_chance", "loss_above_chance"}  # on the CLIP loss, with...
SETTLED_COLLAPSE_ALARM = "embedding_collapse"  # ...collapsed embeddings: "failed, settled"


class SettleCallback(Callback):
    """Stops a replica run once its verdict is settled, by one of two stated criteria:

    - learned: after SETTLE_MIN_STEPS, every CLIP loss of the end window (the last 20% of the steps so
      far, >= 5) is below SETTLED_LOSS_FRACTION x ln(B), half the learning bar: the verdict "learned"
      would hold with a 2x margin;
    - failed: the online rules raised an error alarm for the CLIP loss at (or above) ln(B) and one for
      collapsed embeddings. Both alarms are gated on evidence that the run will not leave that state by
      itself (the loss one only once the optimizer has moved the weights by their own norm, collapse
      only once the effective rank halved), the same gates as a user's live alarm.
    Used for seed replicas (`--seeds K`), never for a run's first seed."""

    def __init__(self, watcher):
        self.watcher, self.stop_training, self.why = watcher, False, None
        self.losses: list[float] = []

    def on_step_end(self, model, info):
        self.losses.append(float(info.loss.logged["loss_clip"]))
        n = len(self.losses)
        if n < SETTLE_MIN_STEPS:
            return
        window = self.losses[-max(END_MIN_POINTS, math.ceil(END_FRAC * n)):]
        if max(window) < SETTLED_LOSS_FRACTION * info.loss.chance:
            self.stop_training = True
            self.why = (f"learned: every CLIP loss of the last {len(window)} steps below {SETTLED_LOSS_FRACTION:g} "
                        "x ln(B)")
            return
        errors = [a.finding for a in self.watcher.alarms if a.finding.severity == "error"]
        loss = {f.id for f in errors if f.id in SETTLED_LOSS_ALARMS and f.target == "loss_clip"}
        if loss and any(f.id == SETTLED_COLLAPSE_ALARM for f in errors):
            fired = sorted(loss | {SETTLED_COLLAPSE_ALARM})
            self.stop_training, self.why = True, f"failed: error alarms {', '.join(fired)} raised"


def model_from_checkpoint(cfg: AlignmentConfig, checkpoint: str | Path):
    """The reference model of `cfg` with the weights of `checkpoint` (safetensors, or torch with
    weights_only=True); mismatched keys or shapes are a ConfigError naming them."""
    model = build_model(cfg)
    load_into(model, load_state_dict(Path(checkpoint)), str(checkpoint))
    return model


def watched_outputs(model: torch.nn.Module) -> dict[str, str]:
    """Intermediate outputs worth a collapse measurement, found by name (no reference import)."""
    names = dict(model.named_modules())
    wanted = {"perceiver_latents": "vision.perceiver", "pooled_image": "vision.pool",
              "projected_tokens": "vision.projector"}
    return {label: path for label, path in wanted.items() if path in names}


def run_instrumented(cfg: AlignmentConfig, steps: int, device: str, extra_callbacks: Sequence[Callback] = (),
                     name: str | None = None, expensive_every: int = 10, model=None, alarm=None,
                     evaluate_every: int | None = None, data_signal: bool = True, settle: bool = False,
                     threads: int | None = None):
    """Train with every probe attached; returns (TrainedRun, records DataFrame). With `data_signal`, a
    sample of the training pairs is checked for signal first (diagnose.engine.datasignal; well under a second).
    With `settle` the run stops once its verdict is settled (`SettleCallback`; seed replicas). The run uses
    `pinned_threads(threads)` torch threads, recorded in its summary."""
    with pinned_threads(threads) as n:
        run, records = _run_instrumented(cfg, steps, device, extra_callbacks, name, expensive_every, model, alarm,
                                         evaluate_every, data_signal, settle)
    run.threads = n
    return run, records


def _run_instrumented(cfg, steps, device, extra_callbacks, name, expensive_every, model, alarm, evaluate_every,
                      data_signal, settle):
    torch.manual_seed(cfg.seed)
    model = model if model is not None else build_model(cfg)
    start = time.perf_counter()
    # the same path as a user's loop; the report is written by the caller. Online evaluation (alarms)
    # only when asked, or while someone listens (diagnose.lab.live: the CLI prints each alarm as it fires,
    # on the watch's own schedule and budget): the report's findings are evaluated on the whole run at the end
    listened, label = live.active(), name or cfg.name
    if settle:
        online = {"evaluate_every": 5, "budget": None, "alarm": live.alarm_event(label) if listened else lambda a: None}
    elif listened and alarm is None and evaluate_every is None:
        online = {"alarm": live.alarm_event(label)}
    else:
        online = {"evaluate_every": evaluate_every, "alarm": alarm or "off"}
    with watch(model, name=name or cfg.name, probes="all", every=1,
               expensive_every=expensive_every, batch_size=cfg.dataset.batch_size,
               max_logit_scale=cfg.losses.max_logit_scale, outputs=watched_outputs(model), **online) as w:
        settler = [SettleCallback(w)] if settle else []
        if data_signal:
            w.data_signal(*sample_training_pairs(cfg), step=0, seed=cfg.seed)
        result = train(cfg, steps=steps, device=device, model=model,
                       callbacks=[ProbeCallback(w), *extra_callbacks, *settler,
                                  *([live.StepEvents(label, steps)] if listened else [])])
    if settler and settler[0].stop_training:
        result.extra["settled"] = {"step": result.steps, "planned": steps, "why": settler[0].why}
    records = w.records
    if w.data_signal_result:
        result.extra["data_signal"] = w.data_signal_result
    return TrainedRun(name or cfg.name, cfg, result, time.perf_counter() - start), records
