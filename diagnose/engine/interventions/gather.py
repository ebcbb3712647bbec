"""Fixes for a feature gather that cuts the graph.

local_grad_in_gather: the local shard of `torch.distributed.all_gather` keeps its autograd history (tests
no_gradient_path when a feature gather cuts it).

`all_gather` fills its output list with tensors that have no autograd history, the caller's own shard
included; a contrastive loss over gathered features then reaches no tower unless the local features are put
back (open_clip's `gather_features` does `gathered[rank] = features`; `torch.distributed.nn.all_gather` is the
differentiable variant). For the run, `torch.distributed.all_gather` is wrapped: after the real collective, the
caller's slot in the list is the caller's own tensor. `all_gather_into_tensor` (one flat output) is not
reached. No process group initialised by the first `observe`: not applicable.

gather_with_grad: every rank's shard keeps its autograd history (tests distributed_gradient_missing: a loss over
features gathered without gradient loses the terms that reach the other ranks' towers). `all_gather` of a tensor
with a gradient fills the caller's list with `torch.distributed.nn.functional.all_gather`'s outputs, whose backward
sends each rank the gradient of its own shard (open_clip's `gather_with_grad`). The watch's own gathers are left as
they are; an async call is passed through.

Without a process group (ranks simulated in one process, a collective written by hand) both act on the loss lines
instead (`hand_gather`): a concatenation of copies cut from this step's graph (`.detach()`, `copy_` under
`no_grad`) gets the features themselves, with their gradient; copies of features that carry none (another rank's,
received as data) stay. Not applicable: by the second `observe` no all_gather of a tensor with a gradient, and no
concatenation of such copies, in the script.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch.distributed as dist

from .base import Intervention, called_by_own_code
from .hand_gather import HandGather


class _GatherFix(Intervention):
    """Shared by both fixes: the hand-written gather's concatenations (no process group), when the fix counts as
    not applicable, and what the report says it did; `_wrap` wraps torch.distributed.all_gather its own way."""

    acted: ClassVar[str]  # what a wrapped all_gather call did, for the report

    def setup(self, watch: Any) -> None:
        self._calls = 0
        self._hand = HandGather()
        self._wrap()

    def _wrap(self) -> None:
        raise NotImplementedError

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self._hand.step_seen()
        distributed = dist.is_available() and dist.is_initialized()
        self.require_acted_by_second_observe(
            self._calls + self._hand.restored,
            "no torch.distributed.all_gather of a tensor with a gradient, and no concatenation of copies cut from "
            "this step's features, in the script" if distributed else
            "no torch.distributed process group, and no concatenation in the loss lines of copies cut from this "
            "step's features (.detach(), copy_ under no_grad)")
        self.did[:] = [f"{self._calls} all_gather call(s) {self.acted}"] if self._calls else []
        if self._hand.restored:
            self.did.append(f"{self._hand.restored} block(s) of hand-written gathers got their features back with "
                            "their gradient")

    def close(self) -> None:
        self._hand.close()
        dist.all_gather = self._orig


class LocalGradInGather(_GatherFix):
    name = "local_grad_in_gather"
    tests = ("no_gradient_path",)
    changes = ("torch.distributed.all_gather puts the caller's own tensor (with its gradient) back in its slot; "
               "without a process group, a hand-written gather's copies of this step's features get the features back")
    acted = "got the local shard back with its gradient"

    def _wrap(self) -> None:
        self._orig = orig = dist.all_gather

        def all_gather(tensor_list, tensor, *args, **kwargs):
            work = orig(tensor_list, tensor, *args, **kwargs)
            group = kwargs.get("group", args[0] if args else None)
            rank = dist.get_rank(group) if group is not None else dist.get_rank()
            if 0 <= rank < len(tensor_list) and tensor.requires_grad:
                tensor_list[rank] = tensor
                self._calls += 1
            return work

        dist.all_gather = all_gather


class GatherWithGrad(_GatherFix):
    name = "gather_with_grad"
    tests = ("distributed_gradient_missing",)
    changes = ("torch.distributed.all_gather gives differentiable copies (torch.distributed.nn's gather): every rank's "
               "features carry their gradient home; without a process group, a hand-written gather's copies of this "
               "step's features get the features back")
    acted = "gave differentiable copies"

    def _wrap(self) -> None:
        self._orig = orig = dist.all_gather

        def all_gather(tensor_list, tensor, group=None, async_op=False):
            if async_op or not tensor.requires_grad or called_by_own_code():
                return orig(tensor_list, tensor, group=group, async_op=async_op)
            from torch.distributed.nn.functional import all_gather as differentiable

            with warnings.catch_warnings():  # deprecated in favour of a private module; still the public one
                warnings.simplefilter("ignore", FutureWarning)
                tensor_list[:] = list(differentiable(tensor, group=group if group is not None else dist.group.WORLD))
            self._calls += 1
            return None

        dist.all_gather = all_gather
