"""`DiagnoseTrainerCallback`: `diagnose.watch` inside a Hugging Face `transformers.Trainer`.

    from diagnose.integrations.hf import DiagnoseTrainerCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[DiagnoseTrainerCallback(out="runs/mine")])
    trainer.train()

Where each value is read: the model's outputs of the step from a forward hook on the model (training
forwards only; the last one of the step under gradient accumulation), gradients in
`on_pre_optimizer_step` (after `max_grad_norm` clipping, before the step), the update in
`on_optimizer_step` (right after the step). CLIP-style outputs are recognised (`loss`,
`logits_per_image`, `image_embeds`, `text_embeds`, and the model's `logit_scale`); for other models
pass ``outputs_fn(outputs) -> dict`` returning `diagnose.watch` observe() arguments (losses,
embeddings, logits, ``extras={"logit_scale": ...}``, ...). Held-out R@1/5/10: pass
``retrieval_fn(model) -> (image_embeds, text_embeds)`` (paired rows of a held-out split); it is called once
at `on_train_end`, in eval mode under no_grad, before the run directory is written. The run directory is
written at `on_train_end`; since the Trainer has no
exception hook, use the callback as a context manager (``with cb: trainer.train()``) to have it written
when training raises. An alarm logs a line and with ``stop_on_alarm=True`` sets
``control.should_training_stop``.

Under `diagnose ablate -- python train.py --steps N` the Trainer stops itself at the cap: the N-th
observed step sets ``control.should_training_stop`` (every rank at the same step), so the loop ends as at
``max_steps`` (that step's optimizer step taken, `on_train_end` run, `retrieval_fn` measured, the run
directory written), and the script ends there with exit status 0 (code after ``trainer.train()``, which
would evaluate or save a model trained N steps, does not run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from probes._hooks import OwnHook

from ..core.errors import require
from ..engine.online import alarm_line, log
from ..engine.watcher import watch
from .scalars import TensorBoardSink

TrainerCallback = require("transformers", "hf", "DiagnoseTrainerCallback").TrainerCallback


def clip_outputs(outputs: Any, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """observe() arguments from a CLIP-style model output (transformers CLIPOutput or a dict alike)."""
    get = outputs.get if hasattr(outputs, "get") else (lambda k, d=None: getattr(outputs, k, d))
    kw: dict[str, Any] = {}
    loss = get("loss")
    if isinstance(loss, torch.Tensor):
        kw["losses"] = {"loss": loss}
    emb = {k: get(f"{k}_embeds") for k in ("image", "text")}
    emb = {k: v for k, v in emb.items() if isinstance(v, torch.Tensor) and v.dim() == 2}
    if emb:
        kw["embeddings"] = emb
        kw["batch_size"] = next(iter(emb.values())).shape[0]
    logits = get("logits_per_image")
    if isinstance(logits, torch.Tensor):
        kw["logits"] = logits
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, torch.Tensor):
        kw["extras"] = {"logit_scale": scale.detach().exp()}
    return kw


class DiagnoseTrainerCallback(TrainerCallback):
    """Trainer callback around `diagnose.watch`; extra keyword arguments go to it (probes, every,
    expensive_every, latents, outputs, max_logit_scale, ...)."""

    def __init__(self, out: str | Path | None = "runs/diagnose", *, name: str = "hf", alarm: str = "warn",
                 stop_on_alarm: bool = False, outputs_fn: Callable[[Any], dict] | None = None,
                 tensorboard: Any = None,
                 retrieval_fn: Callable[[torch.nn.Module], tuple[torch.Tensor, torch.Tensor]] | None = None,
                 **watch_kwargs: Any):
        self.out, self.name, self.alarm, self.stop_on_alarm = out, name, alarm, stop_on_alarm
        self.outputs_fn, self.tensorboard, self.watch_kwargs = outputs_fn, tensorboard, watch_kwargs
        self.retrieval_fn = retrieval_fn
        self.watch = None
        self.last_watch = None
        self._outputs: Any = None
        self._handle = None
        self._stop = False
        self._capped = False  # the ablation's step cap was reached (diagnose.engine.ablation_env)

    # -- Trainer events ------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("DiagnoseTrainerCallback: the Trainer passed no model to on_train_begin")
        out = self.out if state.is_world_process_zero else None
        # the Trainer's optimizer (created before on_train_begin unless its creation is delayed, e.g. under
        # DeepSpeed): the lr each group has, parameters outside it, the update after each step. Accelerate
        # wraps it; the wrapped optimizer is the one whose step runs and whose groups the scheduler sets
        optimizer = kwargs.get("optimizer")
        optimizer = getattr(optimizer, "optimizer", optimizer)
        if not isinstance(optimizer, torch.optim.Optimizer):
            optimizer = None
        self.watch = watch(model, optimizer, out=out, name=self.name, alarm=self._policy(), **self.watch_kwargs)
        self.watch.__enter__()
        if self.watch.control is not None:  # under the ablation: the Trainer leaves its loop at the step cap
            self._capped = False
            self.watch.control.take_over_stop(self._cap_reached)
        self._model = model
        self._handle = model.register_forward_hook(OwnHook(self._keep_outputs))
        if self.tensorboard:
            TensorBoardSink(args.logging_dir if self.tensorboard is True else self.tensorboard).attach(self.watch)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.watch is None or self._outputs is None:
            return
        outputs, self._outputs = self._outputs, None
        kw = self.outputs_fn(outputs) if self.outputs_fn is not None else clip_outputs(outputs, self._model)
        if self.watch.optimizer is None:  # created after on_train_begin: read its lr here (the update rules quote it)
            optimizer = kwargs.get("optimizer")
            optimizer = getattr(optimizer, "optimizer", optimizer)
            if isinstance(optimizer, torch.optim.Optimizer):
                self.watch.optimizer = optimizer
        self.watch.observe(state.global_step, **kw)
        if self._stop or self._capped:
            control.should_training_stop = True

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.watch is not None:
            self.watch.after_step()  # update/param of the step just taken

    def on_step_end(self, args, state, control, **kwargs):
        if self._stop or self._capped:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        ablation = self.watch.control if self.watch is not None else None
        if self.watch is not None and self.retrieval_fn is not None:
            model = self._model
            training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    image, text = self.retrieval_fn(model)
            finally:
                model.train(training)
            self.watch.evaluate_retrieval(image, text)
        self._finish(None)
        if ablation is not None:
            ablation.end_script()  # at the ablation's step cap: the script ends here, exit status 0

    # -- as a context manager: the run directory also when train() raises ----------------------------
    def __enter__(self) -> "DiagnoseTrainerCallback":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._finish(exc if exc_type is not None else None)

    # -- internals -----------------------------------------------------------------------------
    def _cap_reached(self) -> None:
        self._capped = True

    def _keep_outputs(self, module, args, output) -> None:
        if module.training and torch.is_grad_enabled():
            self._outputs = output  # dropped at the next pre-optimizer step

    def _finish(self, exception: BaseException | None) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.watch is None:
            return
        w, self.watch = self.watch, None
        self.last_watch = w
        w.__exit__(type(exception) if exception is not None else None, exception, None)

    def _policy(self):
        def policy(alarm) -> None:
            if self.alarm == "warn":
                log.warning(alarm_line(alarm))
            if self.stop_on_alarm:
                self._stop = True

        return policy if self.alarm != "off" or self.stop_on_alarm else "off"
