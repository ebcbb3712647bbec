"""split_gather_by_rank: a gathered concatenation split the way it was gathered (tests wrong_targets).

To save one collective a script concatenates each rank's two feature matrices, `cat([img, txt])`, gathers that and
splits the result in two, `all_img, all_txt = cat(gathered).chunk(2)`, as if it held every rank's images followed by
every rank's texts. A gather stacks rank by rank: the result is [img_0; txt_0; img_1; txt_1; ...], so with more than
one rank the first "half" holds images and texts of the first ranks and the diagonal target pairs unrelated samples
(SimCLR's NT-Xent gathered that way learns nothing multi-GPU). The counterfactual: would the run learn if the split
took each rank's block apart instead, [img_0; img_1; ...] and [txt_0; txt_1; ...]?

Read from the loss lines' own operations (`ops.watch_ops`, outside every module's forward): a concatenation of two
tensors of one shape along the rows is a pair block; a concatenation of W >= 2 tensors shaped like a pair block of
this step (the gathered ranks: the local one and its copies from the others) is a gathered layout of W blocks; a
`chunk(2)` / `split` / `tensor_split(2)` of that into two equal halves along the rows returns each rank's first
halves in rank order and each rank's second halves (one index_select each: the gradient flows as before). Not
applicable: by the second `observe`, no such split of a gathered concatenation (one rank, features gathered
separately, or a layout the script reorders itself before splitting).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention
from .ops import Call, watch_ops
from .pair_layout import _dim as _rows_dim  # the `dim` argument of a cat / chunk / split, 0 when not given


class SplitGatherByRank(Intervention):
    name = "split_gather_by_rank"
    tests = ("wrong_targets",)
    changes = ("a gathered concatenation of each rank's [image; text] block split in two is split rank by rank "
               "([image_0; image_1; ...] and [text_0; text_1; ...]) instead of at its middle row")

    def setup(self, watch: Any) -> None:
        self._pair_shapes: set[tuple] = set()
        self._split = 0
        self._undo = watch_ops({"cat": self._cat, "concat": self._cat, "concatenate": self._cat,
                                "chunk": self._halves, "split": self._halves, "tensor_split": self._halves})

    def _cat(self, call: Call) -> Any:
        out = call.run()
        tensors = call.args[0] if call.args else call.kwargs.get("tensors")
        if (_rows_dim(call, 1) != 0 or not isinstance(out, torch.Tensor) or out.dim() < 1
                or not isinstance(tensors, (list, tuple)) or len(tensors) < 2
                or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in tensors)):
            return out
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1:
            return out
        shape = shapes.pop()
        if shape in self._pair_shapes:  # the ranks' pair blocks, in rank order
            out._dg_ranked = (len(tensors), shape[0])
        elif len(tensors) == 2:
            self._pair_shapes.add(tuple(out.shape))
        return out

    def _halves(self, call: Call) -> Any:
        x = call.args[0] if call.args else None
        ranked = getattr(x, "_dg_ranked", None)
        if ranked is None or _rows_dim(call, 2) != 0:
            return call.run()
        world, block = ranked
        size = call.args[1] if len(call.args) > 1 else call.kwargs.get(
            "chunks", call.kwargs.get("split_size_or_sections", call.kwargs.get("indices_or_sections")))
        name = getattr(call.func, "__name__", "")
        halves = size == 2 if name in ("chunk", "tensor_split") else size == len(x) // 2
        if not halves or len(x) != world * block or block % 2:
            return call.run()
        half = block // 2
        starts = torch.arange(world, device=x.device) * block
        first = (starts[:, None] + torch.arange(half, device=x.device)).reshape(-1)
        self._split += 1
        if not self.did:
            self.did.append(f"split a gather of {world} ranks' [{half}; {half}] blocks rank by rank, not at its "
                            "middle row")
            self.reached.append(f"the two halves of a {world}-rank gathered concatenation re-laid")
        return (x.index_select(0, first), x.index_select(0, first + half))

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self._pair_shapes.clear()
        self.require_acted_by_second_observe(
            self._split, "no concatenation of gathered [a; b] blocks split in two halves in the loss lines (one "
            "rank, or features gathered separately)")

    def close(self) -> None:
        self._undo()
