"""`DiagnoseCallback`: `diagnose.watch` inside a Lightning `Trainer` (lightning 2.x or pytorch_lightning 2.x).

    from diagnose.integrations.lightning import DiagnoseCallback
    trainer = L.Trainer(callbacks=[DiagnoseCallback(out="runs/mine", stop_on_alarm=True)])
    trainer.fit(model, loader)

Contract: `training_step` returns a dict with ``loss`` (the objective) and optionally loss components
(``loss_<name>`` keys, or ``losses={name: value}``), ``weights={name: w}``, ``image_embeds`` and
``text_embeds`` (the vectors that enter the logits), ``logits`` (image->text), ``logit_scale``,
``candidates`` (when features are gathered across ranks). A bare loss tensor works too: then only the
gradients, updates and the loss are diagnosed. `validation_step` may return ``image_embeds`` and
``text_embeds`` the same way: held-out R@K is computed on them (up to `max_eval_rows` pairs).

Where each value is read: gradients in `on_before_optimizer_step` (after backward and Lightning's
unscaling under mixed precision, before the step; once per optimizer step under gradient
accumulation), the update after the step (the optimizer's step post-hook), the outputs of the
current step from a thin wrapper around `training_step` that keeps a reference (removed at the end).
The run directory is written at the end of fit, also when fit ends by an exception or Ctrl-C. An
alarm logs a line, and with ``stop_on_alarm=True`` sets ``trainer.should_stop`` (Lightning stops at
the end of the step, on every rank).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping

import torch

from ..core.errors import require
from ..engine.online import alarm_line, log
from ..engine.watcher import watch
from .scalars import TensorBoardSink


def _callback_base():
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name).Callback
        except ImportError:
            continue
    require("lightning", "lightning", "DiagnoseCallback")  # raises the one-line error


def split_outputs(out: Any) -> dict[str, Any]:
    """`diagnose.watch` observe() arguments from a training_step output (see the module docstring)."""
    if isinstance(out, torch.Tensor):
        return {"losses": {"loss": out}}
    if not isinstance(out, Mapping):
        return {}
    losses = dict(out.get("losses") or {})
    losses.update({k: v for k, v in out.items() if k.startswith("loss_")})
    if "loss" in out:
        losses["total" if losses else "loss"] = out["loss"]
    kw: dict[str, Any] = {"losses": losses}
    emb = {k: out[f"{k}_embeds"] for k in ("image", "text") if isinstance(out.get(f"{k}_embeds"), torch.Tensor)}
    if emb:
        kw["embeddings"] = emb
        kw["batch_size"] = next(iter(emb.values())).shape[0]
    for key in ("logits", "weights", "candidates"):
        if out.get(key) is not None:
            kw[key] = out[key]
    if isinstance(out.get("inputs"), torch.Tensor):
        kw["inputs"] = out["inputs"]
    if out.get("logit_scale") is not None:
        kw["extras"] = {"logit_scale": out["logit_scale"]}
    return kw


class DiagnoseCallback(_callback_base()):  # type: ignore[misc]
    """Lightning callback around `diagnose.watch`; keyword arguments beyond those below go to it
    (probes, every, expensive_every, latents, outputs, max_logit_scale, ...)."""

    def __init__(self, out: str | Path | None = "runs/diagnose", *, name: str = "lightning", alarm: str = "warn",
                 stop_on_alarm: bool = False, tensorboard: Any = None, max_eval_rows: int = 4096, **watch_kwargs: Any):
        super().__init__()
        self.out, self.name, self.alarm, self.stop_on_alarm = out, name, alarm, stop_on_alarm
        self.tensorboard, self.max_eval_rows, self.watch_kwargs = tensorboard, max_eval_rows, watch_kwargs
        self.watch = None
        self.last_watch = None  # the finished watch: .findings, .root_causes, .alarms, .result()
        self._outputs: Any = None
        self._original_step = None
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    # -- fit lifecycle ----------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        policy = self._on_alarm(trainer)
        out = self.out if trainer.is_global_zero else None  # only rank 0 writes the run directory
        self.watch = watch(pl_module, optimizer, out=out, name=self.name, alarm=policy, **self.watch_kwargs)
        self.watch.__enter__()
        self._attach_tensorboard(trainer)
        original = pl_module.training_step
        self._original_step = original

        def training_step(*args, **kwargs):
            result = original(*args, **kwargs)
            self._outputs = result  # read in on_before_optimizer_step, dropped after it
            return result

        pl_module.training_step = training_step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.watch is None:
            return
        kw = split_outputs(self._outputs)
        self._outputs = None
        if not kw.get("losses"):
            logged = {k: v for k, v in trainer.callback_metrics.items() if "loss" in k and "val" not in k}
            kw["losses"] = logged
        self.watch.observe(trainer.global_step, **kw)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.watch is None or not isinstance(outputs, Mapping) or trainer.sanity_checking:
            return
        img, txt = outputs.get("image_embeds"), outputs.get("text_embeds")
        if isinstance(img, torch.Tensor) and isinstance(txt, torch.Tensor):
            if sum(len(a) for a, _ in self._val) < self.max_eval_rows:
                self._val.append((img.detach().float().cpu(), txt.detach().float().cpu()))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.watch is not None and self._val:
            img = torch.cat([a for a, _ in self._val])[: self.max_eval_rows]
            txt = torch.cat([b for _, b in self._val])[: self.max_eval_rows]
            self.watch.evaluate_retrieval(img, txt)
        self._val = []

    def on_train_end(self, trainer, pl_module) -> None:
        self._finish(pl_module, None)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._finish(pl_module, exception)

    # -- internals ----------------------------------------------------------------------------------
    def _finish(self, pl_module, exception: BaseException | None) -> None:
        if self._original_step is not None:
            pl_module.__dict__.pop("training_step", None)  # the class method again
            self._original_step = None
        if self.watch is None:
            return
        w, self.watch = self.watch, None
        self.last_watch = w
        if exception is not None:
            w.__exit__(type(exception), exception, None)
        else:
            w.__exit__(None, None, None)

    def _on_alarm(self, trainer):
        def policy(alarm) -> None:
            if self.alarm == "warn":
                log.warning(alarm_line(alarm))
            if self.stop_on_alarm:
                trainer.should_stop = True

        return policy if self.alarm != "off" or self.stop_on_alarm else "off"

    def _attach_tensorboard(self, trainer) -> None:
        if not self.tensorboard:
            return
        target = self.tensorboard
        if target is True:  # the trainer's own TensorBoard logger
            target = getattr(trainer.logger, "experiment", None)
            if target is None or not hasattr(target, "add_scalar"):
                raise ValueError("DiagnoseCallback(tensorboard=True) needs a TensorBoardLogger; pass a log dir instead")
        TensorBoardSink(target).attach(self.watch)

    @property
    def findings(self) -> list:
        return self.watch.findings if self.watch is not None else []
