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
they are; an async call is passed through. No process group, or no such call by the second `observe`: not
applicable.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch.distributed as dist

from .base import Intervention, NotApplicable, called_by_own_code


class LocalGradInGather(Intervention):
    name = "local_grad_in_gather"
    tests = ("no_gradient_path",)
    changes = "torch.distributed.all_gather puts the caller's own tensor (with its gradient) back in its slot"

    def setup(self, watch: Any) -> None:
        self._orig = dist.all_gather
        self._calls = 0
        orig = self._orig

        def all_gather(tensor_list, tensor, *args, **kwargs):
            work = orig(tensor_list, tensor, *args, **kwargs)
            group = kwargs.get("group", args[0] if args else None)
            rank = dist.get_rank(group) if group is not None else dist.get_rank()
            if 0 <= rank < len(tensor_list) and tensor.requires_grad:
                tensor_list[rank] = tensor
                self._calls += 1
            return work

        dist.all_gather = all_gather

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise NotApplicable("local_grad_in_gather: no torch.distributed process group is initialised")
        self.did[:] = [f"{self._calls} all_gather call(s) got the local shard back with its gradient"]

    def close(self) -> None:
        dist.all_gather = self._orig


class GatherWithGrad(Intervention):
    name = "gather_with_grad"
    tests = ("distributed_gradient_missing",)
    changes = ("torch.distributed.all_gather gives differentiable copies (torch.distributed.nn's gather): every rank's "
               "features carry their gradient home")

    def setup(self, watch: Any) -> None:
        self._orig = dist.all_gather
        self._calls = 0
        orig = self._orig

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

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise NotApplicable("gather_with_grad: no torch.distributed process group is initialised")
        self.require_acted_by_second_observe(self._calls, "no torch.distributed.all_gather of a tensor with a "
                                                          "gradient in the script")
        self.did[:] = [f"{self._calls} all_gather call(s) gave differentiable copies"]

    def close(self) -> None:
        dist.all_gather = self._orig
