"""Softmax entropy H/ln(K) in [0, 1]: ≈1 uniform (attends to nothing in particular), ≈0 one-hot.

Probe ``softmax_entropy``; metrics entropy_mean / entropy_min over rows (queries × batch) and
nonfinite (rows whose entropy is NaN/Inf, e.g. fully masked); for nn.Softmax modules also axis (the
normalised dimension), axis_size (K) and ndim. Softmaxes over K=1 are skipped.
Sources and targets:
  nn.Softmax submodules (every step on the cheap schedule)       target = module name
  nn.MultiheadAttention (per-head weights forced, expensive)      target = module name
  attention modules returning weights, e.g. HF eager CLIPAttention target = module name
  F.scaled_dot_product_attention calls (recomputed, expensive)     target = innermost calling
      module found on the Python stack, else ``sdpa.call{i}``
  contrastive logits passed to `observe` (row softmax)            target = ``logits.<name>``
4-D probabilities (B, H, Q, K) also give ``<target>.head{h}`` rows.
Logits additionally give positive_prob_mean and top1_acc when square (positives on the diagonal).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from . import stats
from ._hooks import bind_call
from .base import Observation, Probe, module_label

if TYPE_CHECKING:
    from .session import ProbeSession


class SoftmaxEntropy(Probe):
    name = "softmax_entropy"

    def __init__(self, sdpa: bool = True) -> None:
        self.sdpa = sdpa
        self._sdpa_calls = 0

    def setup(self, session: "ProbeSession") -> None:
        model = session.model
        with_softmax = {id(m) for m in model.modules() if any(isinstance(c, nn.Softmax) for c in m.modules())}
        for path, mod in model.named_modules():
            name = module_label(path)
            if isinstance(mod, nn.Softmax):
                session.hooks.forward_hook(mod, self._softmax_hook(session, name))
            elif isinstance(mod, nn.MultiheadAttention):
                session.hooks.forward_pre_hook(mod, self._mha_pre_hook(session), with_kwargs=True)
                session.hooks.forward_hook(mod, self._mha_hook(session, name), with_kwargs=True)
            elif type(mod).__name__.endswith("Attention") and id(mod) not in with_softmax:
                session.hooks.forward_hook(mod, self._weights_output_hook(session, name))
        if self.sdpa:
            original = F.scaled_dot_product_attention
            session.hooks.patch(F, "scaled_dot_product_attention", self._sdpa_wrapper(session, original))

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
            if isinstance(w, torch.Tensor) and w.dim() == 4 and w.is_floating_point() and session.hook_due():
                with session.guard(self.name):
                    self._emit_probs(session, name, w, -1)

        return hook

    # -- F.scaled_dot_product_attention -------------------------------------------------------
    def _sdpa_wrapper(self, session: "ProbeSession", original):
        names = session.module_names

        def scaled_dot_product_attention(*args: Any, **kwargs: Any):
            out = original(*args, **kwargs)
            if session.hook_due(expensive=True):
                with session.guard(self.name):
                    self._sdpa_record(session, names, args, kwargs)
            return out

        scaled_dot_product_attention.__wrapped__ = original  # type: ignore[attr-defined]
        scaled_dot_product_attention.__doc__ = original.__doc__
        return scaled_dot_product_attention

    def _sdpa_record(self, session: "ProbeSession", names: dict[int, str], args: tuple, kwargs: dict) -> None:
        order = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        call = dict(zip(order, args))
        call.update(kwargs)
        with torch.no_grad():
            p = stats.attention_probs(
                call["query"],
                call["key"],
                call.get("attn_mask"),
                bool(call.get("is_causal", False)),
                call.get("scale"),
                bool(call.get("enable_gqa", False)),
            )
        target = _calling_module(names)
        if target is None:
            target = f"sdpa.call{self._sdpa_calls}"
        self._sdpa_calls += 1
        self._emit_probs(session, target, p, -1)
        del p

    # -- contrastive logits -------------------------------------------------------------------
    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        self._sdpa_calls = 0  # call indices restart with every step
        if not obs.logits or not session.due(obs.step):
            return
        logits = dict(obs.logits)
        if "image_to_text" in logits and "text_to_image" not in logits:
            logits["text_to_image"] = logits["image_to_text"].T
        keys: list[tuple[str, str]] = []
        vals: list[torch.Tensor] = []
        with torch.no_grad():
            for lname, z in logits.items():
                z = z.detach().float()
                if z.dim() != 2 or z.shape[1] < 2:
                    continue
                p = torch.softmax(z, dim=1)
                s = stats.entropy_summary(stats.normalised_entropy(p, 1))
                target = f"logits.{lname}"
                for metric in ("entropy_mean", "entropy_min", "nonfinite"):
                    keys.append((target, metric))
                    vals.append(s[metric])
                if z.shape[0] == z.shape[1]:
                    eye = torch.arange(z.shape[0], device=z.device)
                    keys += [(target, "positive_prob_mean"), (target, "top1_acc")]
                    vals += [p.diagonal().mean(), (z.argmax(1) == eye).float().mean()]
        session.buffer.extend_values(obs.step, self.name, keys, vals)


def _calling_module(names: dict[int, str]) -> str | None:
    """Name of the innermost module of the probed model whose method is on the call stack."""
    frame = sys._getframe(2)
    try:
        while frame is not None:
            code = frame.f_code
            if code.co_argcount and code.co_varnames[0] == "self":
                name = names.get(id(frame.f_locals.get("self")))
                if name is not None:
                    return module_label(name)
            frame = frame.f_back
        return None
    finally:
        del frame  # frames reference activations; never let one outlive this call
