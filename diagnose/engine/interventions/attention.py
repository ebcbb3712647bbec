"""attention_batch_first: an nn.MultiheadAttention (or a recurrent layer: nn.LSTM, nn.GRU, nn.RNN) whose
`batch_first` does not match the layout it is fed reads the batch as its sequence and attends (or recurs) across
samples; this gives it the layout its input has (tests pooling_axis). A recurrent layer's output follows the layout
it declares, so `out[:, -1]` after the switch is each sample's last step, as with `batch_first=True` written in.

Two ways to get there: a module built without ``batch_first=True`` and fed (batch, seq, dim) tensors, or a
batch-first module (an ``nn.TransformerEncoder`` built with ``batch_first=True``) fed (seq, batch, dim) by a
transpose left over from sequence-first code. At each attention module's first training call (a forward pre-hook,
removed after it), with the batch size the watch was given (``watch(..., batch_size=B)``, else the first
observation's, from the next step on): a module with ``batch_first=False`` whose query has the batch size on dim 0
and not on dim 1 is switched to ``batch_first=True`` for this run, and one with ``batch_first=True`` whose query has
it on dim 1 and not on dim 0 to ``batch_first=False``. Modules fed the layout they declare are left as they are (as
is a query whose two leading sizes both equal the batch); if none is switched by the second observation, the
intervention is not applicable.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from probes._hooks import OwnHook

from .base import Intervention, NotApplicable


class AttentionBatchFirst(Intervention):
    name = "attention_batch_first"
    tests = ("pooling_axis",)
    changes = ("nn.MultiheadAttention and recurrent (LSTM, GRU, RNN) modules fed the other layout than their "
               "batch_first declares switched to the layout they are fed: (batch, seq, dim) to batch_first=True, "
               "(seq, batch, dim) to batch_first=False")

    def setup(self, watch: Any) -> None:
        self._watch = watch
        self._batch = watch.batch_size
        self._observed = 0
        self._handles: dict = {}
        names = {m: n for n, m in watch.model.named_modules()}
        mods = [m for m in watch.model.modules() if isinstance(m, (nn.MultiheadAttention, nn.RNNBase))]
        if not mods:
            raise NotApplicable("attention_batch_first: the model has no nn.MultiheadAttention or recurrent layer")
        self._handles = {m: m.register_forward_pre_hook(OwnHook(self._hook(names.get(m, "<root>")))) for m in mods}

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            b = self._batch
            if not b or not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor):
                return
            q = args[0]
            self._handles.pop(module).remove()
            if q.dim() != 3 or (q.shape[0] == b) == (q.shape[1] == b):
                return
            fed_batch_first = q.shape[0] == b
            if module.batch_first != fed_batch_first:
                module.batch_first = fed_batch_first
                self.did.append(f"{name}: batch_first {not fed_batch_first} -> {fed_batch_first} (query "
                                f"{tuple(q.shape)}, batch {b})")
        return hook

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self._observed += 1
        if not self._batch:
            emb = next((x for x in (seen.get("embeddings") or {}).values() if isinstance(x, torch.Tensor)), None)
            self._batch = watch.batch_size or (len(emb) if emb is not None else None)
        if self._observed >= 2 and not self.did:
            raise NotApplicable("attention_batch_first: every nn.MultiheadAttention (and recurrent layer) was fed "
                                "the layout its batch_first declares")

    def close(self) -> None:
        for handle in self._handles.values():
            handle.remove()
        self._handles = {}
