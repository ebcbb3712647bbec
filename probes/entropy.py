"""Softmax entropy H/ln(K) in [0, 1]: ≈1 uniform (attends to nothing in particular), ≈0 one-hot.

Probe ``softmax_entropy``; metrics entropy_mean / entropy_min over rows (queries × batch) and
nonfinite (rows whose entropy is NaN/Inf, e.g. fully masked); for every softmax also axis (the
normalised dimension), axis_size (K) and ndim. Softmaxes over K=1 are skipped.
Sources and targets:
  nn.Softmax submodules (every step on the cheap schedule)       target = module name
  nn.MultiheadAttention (per-head weights forced, expensive)      target = module name
  attention modules returning weights, e.g. HF eager CLIPAttention target = module name
  softmax however it is called (``torch.softmax``, ``F.softmax``, ``x.softmax(-1)``) and
      ``F.scaled_dot_product_attention`` (also imported by name; weights recomputed), inside the
      model's forward on the expensive schedule, through a TorchFunctionMode (``_scope.py``):
      target = innermost calling module found on the Python stack, else ``softmax.call{i}`` /
      ``sdpa.call{i}``. Compiled graphs bypass the mode: `coverage` says what was not seen.
  contrastive logits passed to `observe` (row softmax)            target = ``logits.<name>``
4-D probabilities (B, H, Q, K) also give ``<target>.head{h}`` rows.
Logits additionally give, when square (positives on the diagonal): positive_prob_mean, top1_acc,
cross_entropy (row-wise, as given), cross_entropy_best_scale and best_scale_factor (the lowest
cross-entropy of a*logits over a in 1..64, and that a: what the ranking would cost at a sharper
temperature).
Batched over steps: the logits' readings are computed for `BATCH_STEPS` steps at once on the steps' own stacked
logits (`contrastive.BATCH_STEPS`): the same values, each stamped with its own step, for an eighth of the
per-step tensor ops. They reach the records up to BATCH_STEPS - 1 steps late (`records` and `close` compute the
held steps first); the hooks' readings come with their own step.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import stats
from ._hooks import bind_call
from .base import Observation, Probe, module_label
from .contrastive import BATCH_STEPS

if TYPE_CHECKING:
    from .session import ProbeSession


class SoftmaxEntropy(Probe):
    name = "softmax_entropy"

    def __init__(self, functional: bool = True) -> None:
        self.functional = functional  # softmax / SDPA calls seen through a TorchFunctionMode
        self._calls: dict[str, int] = {}
        # the logits of steps whose readings are computed together: (step, one stack's matrices per group), and
        # the groups' targets, shapes, dtypes and devices, the same for every held step
        self._held: list[tuple[int, list[list[torch.Tensor]]]] = []
        self._signature: tuple | None = None

    def setup(self, session: "ProbeSession") -> None:
        model = session.model
        with_softmax = {id(m) for m in model.modules() if any(isinstance(c, nn.Softmax) for c in m.modules())}
        self._hooked: set[int] = set()  # modules whose own hooks read their weights: the mode skips them
        self._from_mode: set[str] = set()  # targets the mode already measured this step
        self.present: dict[str, str] = {}  # attention-like modules of the model: label -> class name
        for path, mod in model.named_modules():
            name = module_label(path)
            if isinstance(mod, nn.Softmax):
                self._hooked.add(id(mod))
                session.hooks.forward_hook(mod, self._softmax_hook(session, name))
            elif isinstance(mod, nn.MultiheadAttention):
                self._hooked.add(id(mod))
                session.hooks.forward_pre_hook(mod, self._mha_pre_hook(session), with_kwargs=True)
                session.hooks.forward_hook(mod, self._mha_hook(session, name), with_kwargs=True)
            elif type(mod).__name__.endswith("Attention") and id(mod) not in with_softmax:
                session.hooks.forward_hook(mod, self._weights_output_hook(session, name))
            if isinstance(mod, nn.MultiheadAttention) or "attention" in type(mod).__name__.lower() \
                    or "attend" in type(mod).__name__.lower():
                self.present[name] = type(mod).__name__
        if self.functional:
            session.forward_scope().add(lambda module: _FunctionalSoftmax(self, session))

    def coverage(self, session: "ProbeSession", records) -> dict:
        """Attention-like modules present vs those with entropy records (a record of a child counts)."""
        seen = set(records.loc[records["probe"] == self.name, "target"].unique()) if len(records) else set()
        unseen = [m for m in self.present if not any(t == m or t.startswith(m + ".") for t in seen)]
        return {"attention_modules_present": len(self.present),
                "attention_modules_seen": len(self.present) - len(unseen),
                "attention_modules_not_seen": unseen,
                "softmax_targets": sorted(t for t in seen if ".head" not in t)}

    # -- shared ------------------------------------------------------------------------------
    def _emit_probs(self, session: "ProbeSession", target: str, p: torch.Tensor, dim: int = -1) -> None:
        dim = dim % p.dim()
        if p.shape[dim] < 2:
            return
        with torch.no_grad():
            h = stats.normalised_entropy(p.detach(), dim)
            head_axis = 1 if (p.dim() == 4 and dim == 3) else None
            s = stats.entropy_summary(h, head_axis)
        buf = session.buffer
        buf.defer(self.name, target, "entropy_mean", s["entropy_mean"])
        buf.defer(self.name, target, "entropy_min", s["entropy_min"])
        buf.defer(self.name, target, "nonfinite", s["nonfinite"])
        if head_axis is not None:
            heads = [f"{target}.head{h}" for h in range(p.shape[1])]
            buf.defer(self.name, heads, "entropy_mean", s["head_mean"])
            buf.defer(self.name, heads, "entropy_min", s["head_min"])

    # -- nn.Softmax ---------------------------------------------------------------------------
    def _softmax_hook(self, session: "ProbeSession", name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor) and session.hook_due():
                with session.guard(self.name):
                    dim = stats.softmax_dim(output.dim(), module.dim)
                    self._emit_probs(session, name, output, dim)
                    # which axis is normalised and its size: a softmax over the batch axis (axis 0,
                    # size = batch size) makes each sample's weights depend on the rest of the batch
                    session.buffer.defer(self.name, name, "axis", float(dim % output.dim()))
                    session.buffer.defer(self.name, name, "axis_size", float(output.shape[dim]))
                    session.buffer.defer(self.name, name, "ndim", float(output.dim()))

        return hook

    # -- nn.MultiheadAttention ----------------------------------------------------------------
    def _mha_pre_hook(self, session: "ProbeSession"):
        def pre_hook(module, args, kwargs):
            if not session.hook_due(expensive=True):
                return None
            with session.guard(self.name):
                call = bind_call(module, args, kwargs)
                # remember what the caller asked for, to give it back in the forward hook
                session.scratch[id(module)] = (call.get("need_weights", True), call.get("average_attn_weights", True))
                call["need_weights"] = True
                call["average_attn_weights"] = False
                q, k, v = call.pop("query"), call.pop("key"), call.pop("value")
                return (q, k, v), call
            return None

        return pre_hook

    def _mha_hook(self, session: "ProbeSession", name: str):
        def hook(module, args, kwargs, output):
            asked = session.scratch.pop(id(module), None)
            if asked is None:
                return None
            need, average = asked
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if isinstance(weights, torch.Tensor):
                with session.guard(self.name):
                    w = weights if weights.dim() == 4 else weights.unsqueeze(0)  # unbatched (H, L, S)
                    self._emit_probs(session, name, w, -1)
                if not need:
                    return (output[0], None)
                if average:
                    return (output[0], weights.mean(dim=-3))
            return None

        return hook

    # -- modules that return attention weights (HF eager attention) ---------------------------
    def _weights_output_hook(self, session: "ProbeSession", name: str):
        def hook(module, args, output):
            if not (isinstance(output, tuple) and len(output) > 1):
                return
            w = output[1]
            if name in self._from_mode:
                return  # its softmax / SDPA call was measured inside the forward
            if isinstance(w, torch.Tensor) and w.dim() == 4 and w.is_floating_point() and session.hook_due():
                with session.guard(self.name):
                    self._emit_probs(session, name, w, -1)

        return hook

    # -- torch.softmax / F.softmax / Tensor.softmax / SDPA, through the forward scope ------------
    def functional_call(self, session: "ProbeSession", func, args: tuple, kwargs: dict, out) -> None:
        if not session.hook_due(expensive=True) or not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return
        module_id, label = _calling_module(session.module_names)
        if module_id in self._hooked:
            return  # nn.Softmax / MultiheadAttention: their own hooks measure them
        kind = func.__name__
        if label is None:  # a call outside any module of the model: number it within the step
            i = self._calls.get(kind, 0)
            self._calls[kind] = i + 1
            label = f"{'sdpa' if kind != 'softmax' else kind}.call{i}"
        self._from_mode.add(label)
        if kind == "softmax":
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            dim = stats.softmax_dim(out.dim(), dim)
            self._emit_probs(session, label, out, dim)
            buf = session.buffer
            buf.defer(self.name, label, "axis", float(dim % out.dim()))
            buf.defer(self.name, label, "axis_size", float(out.shape[dim]))
            buf.defer(self.name, label, "ndim", float(out.dim()))
            return
        order = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        call = dict(zip(order, args))
        call.update(kwargs)
        with torch.no_grad():
            p = stats.attention_probs(call["query"], call["key"], call.get("attn_mask"),
                                      bool(call.get("is_causal", False)), call.get("scale"),
                                      bool(call.get("enable_gqa", False)))
        self._emit_probs(session, label, p, -1)
        del p

    # -- contrastive logits -------------------------------------------------------------------
    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        self._calls.clear()  # call indices restart with every step
        self._from_mode.clear()
        if not obs.logits or not session.due(obs.step):
            return
        logits = dict(obs.logits)
        if "image_to_text" in logits and "text_to_image" not in logits:
            logits["text_to_image"] = logits["image_to_text"].T
        by_shape: dict[tuple, list[tuple[str, torch.Tensor]]] = {}
        for lname, z in logits.items():
            if z.dim() == 2 and z.shape[1] >= 2:
                by_shape.setdefault((tuple(z.shape), z.device), []).append((f"logits.{lname}", z.detach()))
        if not by_shape:
            return
        # both directions of a square matrix in one stack, computed with the next held steps' (module docstring)
        signature = tuple((tuple(t for t, _ in group), shape, device, tuple(z.dtype for _, z in group))
                          for (shape, device), group in by_shape.items())
        if self._held and signature != self._signature:
            self.drain(session)
        self._signature = signature
        self._held.append((obs.step, [[z for _, z in group] for group in by_shape.values()]))
        if len(self._held) >= BATCH_STEPS:
            self.drain(session)

    def drain(self, session: "ProbeSession") -> None:
        """The held steps' logits readings, computed now (their values wait for the next flush like any other)."""
        held, self._held = self._held, []
        if not held:
            return
        steps = [step for step, _ in held]
        for g, (targets, _, _, _) in enumerate(self._signature):
            with torch.no_grad():
                z = torch.stack([z.float() for _, groups in held for z in groups[g]])  # (K * L, B, C)
                stats_ = _logits_stats(z)
                values = torch.stack([v.float().reshape(len(held), len(targets)) for v in stats_.values()], 1)
            metrics = [m for m in stats_ for _ in targets]
            session.buffer.later_steps(steps, self.name, values.reshape(len(held), -1), list(targets) * len(stats_),
                                       metrics)

    def close(self, session: "ProbeSession") -> None:
        self.drain(session)


def _logits_stats(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per matrix of a (L, B, C) stack of logits, one value each (1-d, L): entropy of the softmax rows
    (mean, min over finite rows, non-finite count) and, for square matrices (positives on the diagonal), the
    positive's mean probability, top-1 accuracy, cross-entropy and the best rescaled cross-entropy."""
    p = torch.softmax(z, dim=2)
    h = stats.normalised_entropy(p, 2)  # (L, B)
    finite = torch.isfinite(h)
    n_finite = finite.sum(1)
    zero = torch.zeros((), dtype=h.dtype, device=h.device)
    row_min = torch.where(finite, h, torch.full_like(zero, math.inf)).amin(1)
    out = {"entropy_mean": torch.where(finite, h, zero).sum(1) / n_finite,  # nan if no finite row
           "entropy_min": torch.where(n_finite > 0, row_min, torch.full_like(zero, math.nan)),
           "nonfinite": (~finite).sum(1)}
    b, c = z.shape[1], z.shape[2]
    if b == c:
        eye = torch.arange(b, device=z.device)
        ce, ce_best, factor = stats.best_scale_cross_entropy(z)
        out.update(positive_prob_mean=p.diagonal(dim1=1, dim2=2).mean(1), top1_acc=(z.argmax(2) == eye).float().mean(1),
                   cross_entropy=ce, cross_entropy_best_scale=ce_best, best_scale_factor=factor)
    return out


def _calling_module(names: dict[int, str]) -> tuple[int | None, str | None]:
    """(id, label) of the innermost module of the probed model whose method is on the call stack."""
    frame = sys._getframe(1)
    try:
        while frame is not None:
            code = frame.f_code
            if code.co_argcount and code.co_varnames[0] == "self":
                obj = frame.f_locals.get("self")
                name = names.get(id(obj))
                if name is not None:
                    return id(obj), module_label(name)
            frame = frame.f_back
        return None, None
    finally:
        del frame  # frames reference activations; never let one outlive this call


class _FunctionalSoftmax(TorchFunctionMode):
    """Active inside the model's forward on scheduled steps (see `probes._scope`): hands every
    softmax and scaled-dot-product-attention call, however it was spelled, to the probe."""

    WATCHED = frozenset({"softmax", "scaled_dot_product_attention"})

    def __init__(self, probe: SoftmaxEntropy, session: "ProbeSession") -> None:
        super().__init__()
        self.probe, self.session = probe, session

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if getattr(func, "__name__", None) in self.WATCHED:
            with self.session.guard(self.probe.name):
                self.probe.functional_call(self.session, func, args, kwargs, out)
        return out
