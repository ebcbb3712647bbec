"""batch_first_view: a `view` / `reshape` that puts the batch first on a tensor whose batch axis is not first moves
that axis to the front before it (tests pooling_axis when the samples are mixed by a view used as a transpose).

`.view()` does not move axes, it reads the same memory in a new shape. A (K, B, D) attention output (sequence-first
nn.MultiheadAttention) read as ``out.view(B, -1, D)``, or a bidirectional GRU's (2, B, H) final state read as
``h.view(B, 2 * H)``, gives row b values of other samples: each "sample" row is built from a block of neighbouring
samples, and no row of the batch is a function of its own input any more. The counterfactual, through the model's
and the script's own operations (`ops.watch_ops`, inside the forwards too): a `view` / `reshape` whose input has
exactly one axis of the batch's size besides its last (the features' axis, which may equal it), not the first, and
whose requested shape starts with the batch size, is computed as ``x.movedim(axis, 0).reshape(shape)``: each row
then holds its own sample's values, as the transpose the script meant would give. The batch size is the one given to
the watch, else the rows of the first `observe`'s embeddings. Not applicable when no such call happened by the
second `observe`.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention
from .ops import Call, watch_ops


def _shape(args: tuple) -> tuple | None:
    """The requested shape of `x.view(*shape)` / `x.view(shape)` / `torch.reshape(x, shape)` (args after x)."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        args = tuple(args[0])
    return args if args and all(isinstance(a, int) for a in args) else None


class BatchFirstView(Intervention):
    name = "batch_first_view"
    tests = ("pooling_axis",)
    changes = ("a view / reshape that puts the batch size first on a tensor whose one batch-sized axis is not the "
               "first (out.view(B, -1, D) on a (K, B, D) attention output) moves that axis to the front first, in the "
               "model and the script")

    def setup(self, watch: Any) -> None:
        self._batch = int(watch.batch_size) if getattr(watch, "batch_size", None) else None
        self._moved = 0
        self._shapes: set[tuple[tuple, tuple]] = set()
        self._undo_ops = watch_ops({"view": self._view, "reshape": self._view}, inside_modules=True)

    def _view(self, call: Call) -> Any:
        x, rest = (call.args[0], call.args[1:]) if call.args else (None, ())
        shape = _shape(rest)
        b = self._batch
        if b is None or call.kwargs or not isinstance(x, torch.Tensor) or shape is None or shape[0] != b:
            return call.run()
        axes = [a for a, n in enumerate(x.shape) if n == b]
        if len(axes) > 1 and axes[-1] == x.dim() - 1:  # a width equal to the batch size is the features' last axis
            axes = axes[:-1]
        if len(axes) != 1 or axes[0] == 0:
            return call.run()
        self._moved += 1
        self._shapes.add((tuple(x.shape), tuple(shape)))
        self.reached[:] = [f"{self._moved} view(s) of a tensor with its batch axis elsewhere moved it first"]
        return x.movedim(axes[0], 0).reshape(shape)

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if self._batch is None:
            emb = next(iter((seen.get("embeddings") or {}).values()), None)
            self._batch = int(emb.shape[0]) if isinstance(emb, torch.Tensor) and emb.dim() else None
        shapes = ", ".join(f"{tuple(s)} -> {tuple(t)}" for s, t in sorted(self._shapes)[:3])
        self.did[:] = [f"{self._moved} view/reshape call(s) moved the batch axis first before reading ({shapes})"]
        self.require_acted_by_second_observe(self._moved, "no view or reshape put the batch size first on a tensor "
                                                          "whose batch axis is elsewhere")

    def close(self) -> None:
        self._undo_ops()
