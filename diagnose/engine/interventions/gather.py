"""local_grad_in_gather: the local shard of `torch.distributed.all_gather` keeps its autograd history (tests
no_gradient_path when a feature gather cuts it).

`all_gather` fills its output list with tensors that have no autograd history, the caller's own shard
included; a contrastive loss over gathered features then reaches no tower unless the local features are put
back (open_clip's `gather_features` does `gathered[rank] = features`; `torch.distributed.nn.all_gather` is the
differentiable variant). For the run, `torch.distributed.all_gather` is wrapped: after the real collective, the
caller's slot in the list is the caller's own tensor. `all_gather_into_tensor` (one flat output) is not
reached. No process group initialised by the first `observe`: not applicable.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from .base import Intervention, NotApplicable


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
