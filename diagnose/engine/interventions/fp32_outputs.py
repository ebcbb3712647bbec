"""fp32_outputs: the watched model's half-precision outputs are cast to float32 (tests nonfinite_divergence
when it comes from a loss computed by hand on half-precision outputs).

A model run in fp16 (``model.half()``, a checkpoint loaded in half) returns fp16 embeddings and logits; a
loss written by hand on them (``exp(sim / T)``, a logsumexp without the max subtracted) overflows fp16
(exp(x) is inf above x ~ 11.1, i.e. a cosine of 0.78 at CLIP's scale 14.3) and the run turns NaN as soon
as it starts to learn. A forward hook on the model (and on its ``encode_image`` / ``encode_text`` /
``get_image_features`` / ``get_text_features``, which scripts call instead of ``forward``) casts every fp16 /
bf16 tensor it returns to float32, through tuples, lists, dicts and dataclass-like outputs (transformers'
``ModelOutput``), so whatever the script computes on them runs in fp32; the model itself keeps its precision,
and the gradient flows back through the cast. What the script casts to half itself in its loss lines, after the
model returned fp32 (``scale.half() * (img.half() @ txt.half().t())``), is reached through the script's own
operations (`ops.watch_ops`): a half-precision result shaped like the logits handed to `observe` (known from the
batch size given to the watch, else from the first `observe`), computed outside every module's forward, is cast to
float32 where it is made, so the loss on it runs in fp32. Not applicable: a model whose entry points were never
called before the first `observe`, or by then (by the second when the logits' shape was not known before the first)
no half-precision output or logits were cast.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from probes._hooks import OwnHook

from .base import Intervention, NotApplicable, declared_logits_shapes, note_logits_shape
from .ops import Call, watch_ops

HALF = (torch.float16, torch.bfloat16)
METHODS = ("encode_image", "encode_text", "get_image_features", "get_text_features")


class Fp32Outputs(Intervention):
    name = "fp32_outputs"
    tests = ("nonfinite_divergence",)
    changes = ("the model's fp16/bf16 outputs (tensors in tuples, dicts, ModelOutput) cast to float32 by a forward "
               "hook, and half-precision logits the script computes itself cast where they are made, so the loss "
               "on them runs in fp32")

    def setup(self, watch: Any) -> None:
        model = watch.model
        self._calls, self._cast, self._kept = 0, 0, set()
        self._handles = [model.register_forward_hook(OwnHook(lambda m, a, out: self._to_fp32(out)))]
        self._patched: list[str] = []
        self._model = model
        for name in METHODS:
            method = getattr(model, name, None)
            if callable(method) and name not in model.__dict__:
                setattr(model, name, self._wrap(method))
                self._patched.append(name)
        self._shapes = declared_logits_shapes(watch)
        self._wait, self._observed, self._logits_cast = not self._shapes, 0, 0
        self._undo_ops = watch_ops({"*": self._half_logits})

    def _half_logits(self, call: Call) -> Any:
        out = call.run()
        if (isinstance(out, torch.Tensor) and out.dtype in HALF and out.dim() == 2
                and tuple(out.shape) in self._shapes):
            self._logits_cast += 1
            return out.float()
        return out

    def _wrap(self, method: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            return self._to_fp32(method(*args, **kwargs))
        return wrapped

    def _to_fp32(self, out: Any) -> Any:
        self._calls += 1
        return self._cast_tree(out)

    def _cast_tree(self, x: Any) -> Any:
        """`x` with every fp16/bf16 tensor inside it as float32 (containers rebuilt, ModelOutput in place)."""
        if isinstance(x, torch.Tensor):
            if x.dtype in HALF:
                self._cast += 1
                return x.float()
            if x.is_floating_point():
                self._kept.add(str(x.dtype).removeprefix("torch."))
            return x
        if isinstance(x, dict):  # ModelOutput is an OrderedDict whose __setitem__ also sets the attribute
            if type(x) is dict:
                return {k: self._cast_tree(v) for k, v in x.items()}
            for k in list(x.keys()):
                x[k] = self._cast_tree(x[k])
            return x
        if isinstance(x, tuple):
            items = [self._cast_tree(v) for v in x]
            return type(x)(*items) if hasattr(x, "_fields") else tuple(items)
        if isinstance(x, list):
            return [self._cast_tree(v) for v in x]
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            for f in dataclasses.fields(x):  # object.__setattr__: a frozen dataclass too
                object.__setattr__(x, f.name, self._cast_tree(getattr(x, f.name)))
            return x
        return x

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self._observed += 1
        note_logits_shape(self._shapes, seen)
        if self._calls == 0:
            raise NotApplicable("fp32_outputs: the model's forward (or encode_image/encode_text) was never called "
                                "before the first observe")
        if self._cast + self._logits_cast == 0 and (self._observed >= 2 or not self._wait):
            kept = ", ".join(sorted(self._kept)) or "no floating-point tensor"
            raise NotApplicable(f"fp32_outputs: the model's outputs are already fp32 ({kept} in {self._calls} "
                                "calls) and the script computes no half-precision logits")
        outputs = f"{self._cast} half-precision output tensor(s) cast to float32 over {self._calls} model calls"
        logits = f"{self._logits_cast} half-precision logits computed by the script cast to float32"
        self.did[:] = [line for n, line in ((self._cast, outputs), (self._logits_cast, logits)) if n]

    def close(self) -> None:
        self._undo_ops()
        for h in self._handles:
            h.remove()
        for name in self._patched:
            self._model.__dict__.pop(name, None)
