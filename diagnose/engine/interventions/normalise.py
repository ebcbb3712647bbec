"""normalise_rows: the similarity computed on unit embedding rows (tests not_normalised).

`F.normalize(x, dim=0)` on (B, E) embeddings scales each feature column to unit norm across the batch instead of
each embedding to unit length: the logits are no longer cosines, their scale depends on the batch, and the
temperature no longer means what it says. While the run lasts the script's calls (the watch's probes keep theirs)
of `torch.nn.functional.normalize` on a 2-d tensor along dim 0 (or -2) whose rows are the batch (as many as the
batch size given to the watch, any number when none was) are computed along the last axis instead.

Embeddings not normalised at all, or by hand (`x / x.norm()`: the norm of the whole matrix; `x / x.norm(dim=0)`), meet
no such call: there the script's own matrix product that makes the logits (`scale * img @ txt.t()`, an (n, E) @ (E, m)
product whose result has the shape of the logits handed to `observe`, computed in the loss lines outside the model's
forward, or in a parameter-free loss module of the script's own) gets its operands' rows scaled to unit norm (the
columns of the right one), a scalar factor already applied to an operand (`scale * img`) kept (`ops.watch_ops`). A
script that hands `observe` embeddings but no logits (a SupCon / NT-Xent loss over the stacked views): the product
whose result's rows and columns are multiples of the batch (views, ranks) and that is a matrix times its own transpose
(from the first step), or whose operands' rows have the embeddings' width (from the second: the first `observe` says
it). Operands whose rows are unit already are left alone. Not applicable: by the second `observe` neither an
F.normalize call along the batch axis nor a product of rows that were not unit (the script normalises correctly).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, called_by_own_code, declared_logits_shapes, note_logits_shape, seen_logits
from .ops import Call, op_name, watch_ops


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (int, float)) or (isinstance(x, torch.Tensor) and x.numel() == 1)


def _unit_or_none(x: torch.Tensor, dim: int) -> torch.Tensor | None:
    """`x` with unit rows (dim=-1) or columns (dim=0), a scalar factor applied to it kept; None when they are unit
    already."""
    import torch.nn.functional as F

    base, factor, op = getattr(x, "_dg_scaled", (x, None, None))
    with torch.no_grad():
        norms = base.detach().float().norm(dim=dim)
        if bool(((norms - 1).abs() < 1e-3).all()):
            return None
    y = F.normalize(base, dim=dim)
    return y if factor is None else (y * factor if op == "mul" else y / factor)


class NormaliseRows(Intervention):
    name = "normalise_rows"
    tests = ("not_normalised",)
    changes = ("F.normalize called by the script along the batch axis (dim=0) of (B, E) embeddings done along dim=-1; "
               "the script's product that makes the logits (`img @ txt.t()`) computed on unit rows")

    def setup(self, watch: Any) -> None:
        import torch.nn.functional as F

        self._F, self._orig, self._moved = F, F.normalize, 0
        rows = getattr(watch, "batch_size", None)
        orig = self._orig

        def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
            if (isinstance(input, torch.Tensor) and input.dim() == 2 and dim in (0, -2)
                    and (not rows or input.shape[0] == rows) and not called_by_own_code()):
                self._moved += 1
                dim = -1
            return orig(input, p=p, dim=dim, eps=eps, out=out)

        F.normalize = normalize
        self._shapes = declared_logits_shapes(watch)
        self._rows, self._width, self._logits_seen = rows, None, False  # the embeddings' width, without logits
        self._renormed = 0
        self._undo_ops = watch_ops({"mul": self._scaled, "div": self._scaled, "matmul": self._matmul},
                                   model=watch.model)  # a loss module of the script's own (SupConLoss) is loss lines

    def _scaled(self, call: Call) -> Any:
        """`scale * img`, `img / T`: the result remembers its base and factor, for a product of it to normalise."""
        out = call.run()
        if isinstance(out, torch.Tensor) and out.dim() == 2 and len(call.args) == 2 and not call.kwargs:
            a, b = call.args
            op = op_name(call.func)
            for base, factor in ((a, b), (b, a)) if op == "mul" else ((a, b),):
                if isinstance(base, torch.Tensor) and base.shape == out.shape and _is_scalar(factor):
                    out._dg_scaled = (base, factor, op)
                    break
        return out

    def _matmul(self, call: Call) -> Any:
        a, b = (call.args + (None, None))[:2]
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() == 2 and b.dim() == 2
                and a.is_floating_point() and ((a.shape[0], b.shape[1]) in self._shapes or self._of_embeddings(a, b))):
            return call.run()
        na, nb = _unit_or_none(a, -1), _unit_or_none(b, 0)
        if na is None and nb is None:
            return call.run()
        self._renormed += 1
        return call.run(a if na is None else na, b if nb is None else nb)

    def _of_embeddings(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        """No logits handed over: a product of rows of the embeddings' width into multiples of the batch."""
        rows, width = self._rows, self._width
        if self._logits_seen or not rows or a.shape[0] % rows or b.shape[1] % rows:
            return False
        gram = (b.shape == a.shape[::-1] and b.data_ptr() == a.data_ptr() and b.stride() == a.stride()[::-1])
        return bool(gram or (width and a.shape[1] == width and b.shape[0] == width))

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        note_logits_shape(self._shapes, seen)
        self._logits_seen = self._logits_seen or seen_logits(seen) is not None
        image = (seen.get("embeddings") or {}).get("image")
        if self._width is None and isinstance(image, torch.Tensor) and image.dim() == 2:
            self._rows, self._width = self._rows or int(image.shape[0]), int(image.shape[1])
        self.require_acted_by_second_observe(self._moved + self._renormed, "the script made no F.normalize call "
                                             "along the batch axis of a (B, E) tensor and no product of rows that "
                                             "were not unit into the logits in the first step")
        self.did[:] = [f"{self._moved} F.normalize call(s) along the batch axis done along the feature axis",
                       f"{self._renormed} product(s) into the logits computed on unit rows"]

    def close(self) -> None:
        self._F.normalize = self._orig
        self._undo_ops()
