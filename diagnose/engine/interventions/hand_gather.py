"""A gather written by hand in the loss lines: the blocks of a concatenation that are copies, cut from the graph, of
this step's features (`.detach()`, `.detach().clone()`, `out.copy_(t)` under `no_grad` or `out.copy_(t.detach())`, as
`dist.all_gather` hands them back) get the features themselves back, with their gradient.

Where a script stands in for `torch.distributed.all_gather` (ranks simulated in one process, a collective wrapped
by hand), no process group exists for `gather.py`'s fixes to wrap, yet the loss lines show the same cut: features
that carry the gradient are copied without it, and the copies concatenated into the candidates. Seen through
`ops.watch_ops`: a copy is marked with the tensor it was cut from and the step it was cut in; a `cat` along the rows
of such copies gets the sources in their place. Only copies cut in the current step (since the first module forward
after the last `observe`) are put back: the graph of an earlier step is freed by its backward, and a bank or queue of
earlier features is detached by design. A source that carries no gradient (a forward under `no_grad`, another rank's
features received as data) stays a copy.
"""

from __future__ import annotations

from typing import Any

import torch

from .ops import Call, watch_ops
from .pair_layout import mark

KEEPS = ("clone", "contiguous", "to", "float", "half", "bfloat16")  # a copy of a copy is a copy of the source


class HandGather:
    """`watch_ops` handlers marking cut copies and restoring them in concatenations; `restored` counts blocks put
    back, `step_seen()` marks a step boundary (the intervention's `observe`)."""

    def __init__(self) -> None:
        import torch.nn.modules.module as mm

        self.step = 0
        self.restored = 0
        self._boundary = False
        self._hook = mm.register_module_forward_pre_hook(self._forward)
        self._undo = watch_ops({"detach": self._detach, "copy_": self._copy, "cat": self._cat, "concat": self._cat,
                                "concatenate": self._cat, **{name: self._keep for name in KEEPS}})

    def _forward(self, module: Any, args: Any) -> None:
        if self._boundary:  # the first forward after an observe starts a new graph
            self.step += 1
            self._boundary = False

    def step_seen(self) -> None:
        self._boundary = True

    def _mark(self, copy: Any, source: Any) -> None:
        if (isinstance(copy, torch.Tensor) and isinstance(source, torch.Tensor) and source.requires_grad
                and copy.shape == source.shape and not copy.requires_grad):
            mark(copy, "_dg_cut_from", (source, self.step))

    def _detach(self, call: Call) -> Any:
        out = call.run()
        self._mark(out, call.args[0] if call.args else None)
        return out

    @staticmethod
    def _inherit(copy: Any, of: Any) -> None:
        """A copy (without gradient) of a cut copy is a copy of its source."""
        cut = getattr(of, "_dg_cut_from", None)
        if (cut is not None and isinstance(copy, torch.Tensor) and copy is not of and not copy.requires_grad
                and copy.shape == of.shape):
            mark(copy, "_dg_cut_from", cut)

    def _keep(self, call: Call) -> Any:
        out = call.run()
        self._inherit(out, call.args[0] if call.args else None)
        return out

    def _copy(self, call: Call) -> Any:
        out = call.run()
        dst, src = (call.args + (None, None))[:2]
        if not torch.is_grad_enabled():  # a copy under no_grad: cut from the graph
            self._mark(dst, src)
        else:  # `out.copy_(t.detach())`
            self._inherit(dst, src)
        return out

    def _cat(self, call: Call) -> Any:
        tensors = call.args[0] if call.args else call.kwargs.get("tensors")
        dim = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else 0)
        if dim != 0 or not isinstance(tensors, (list, tuple)):
            return call.run()
        back = []
        for t in tensors:
            cut = getattr(t, "_dg_cut_from", None)
            if cut is not None and cut[1] == self.step and cut[0].requires_grad:
                back.append(cut[0])
                self.restored += 1
            else:
                back.append(t)
        if not any(a is not b for a, b in zip(back, tensors)):
            return call.run()
        if call.args:
            return call.run(type(tensors)(back), *call.args[1:])
        return call.func(**{**call.kwargs, "tensors": type(tensors)(back)})

    def close(self) -> None:
        self._undo()
        self._hook.remove()
