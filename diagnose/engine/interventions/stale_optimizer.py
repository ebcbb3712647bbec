"""relink_optimizer: an optimizer that steps copies of the model's parameters steps the parameters themselves
(tests param_not_in_optimizer).

`add_missing_params` helps when the model's tensors are in no param group; this is the other way round: every
parameter is in the optimizer the script hands over, yet the optimizer that really steps (a base optimizer held by a
wrapper, SAM / Lookahead / Bayesian style, in an attribute or in its `state`) holds other tensors. The usual way
there: `optimizer.load_state_dict` copies a base optimizer kept in `state` as it was pickled, so the live one is
replaced by one whose param groups hold the checkpoint's copies; or the model was rebuilt after the optimizer. When
the watch opens, every optimizer reachable from the watched one (itself, its attributes, its state's values, two
levels deep) is searched for param-group tensors that are not the model's parameters; each is replaced by the
model's parameter of the same shape and dtype, preferring one with equal values (a copy from the same checkpoint),
in order, and its optimizer state (moments, step) moves with it. Nothing stale: not applicable.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from .base import Intervention, NotApplicable, require_optimizer

DEPTH = 2


def reachable_optimizers(opt: Any, where: str = "optimizer", depth: int = DEPTH) -> Iterator[tuple[str, Any]]:
    """The optimizer and those it holds in attributes or in its state's values (a wrapper's base optimizer)."""
    yield where, opt
    if depth == 0:
        return
    held = [(f"{where}.{k}", v) for k, v in vars(opt).items() if k != "state"]
    held += [(f"{where}.state[{k!r}]", v) for k, v in getattr(opt, "state", {}).items() if not torch.is_tensor(k)]
    for name, value in held:
        if isinstance(value, torch.optim.Optimizer) and value is not opt:
            yield from reachable_optimizers(value, name, depth - 1)


class RelinkOptimizer(Intervention):
    name = "relink_optimizer"
    tests = ("param_not_in_optimizer",)
    changes = ("tensors in the param groups of the optimizer or of one it holds (a wrapper's base optimizer) that are "
               "not the model's parameters replaced by the model's parameter of that shape, their state moved along")

    def setup(self, watch: Any) -> None:
        opt = require_optimizer(watch, self.name)
        model = [p for p in watch.model.parameters()]
        own = {id(p) for p in model}
        said = []
        seen: set[int] = set()
        for where, o in reachable_optimizers(opt):
            if id(o) in seen:
                continue
            seen.add(id(o))
            n = self._relink(o, model, own)
            if n:
                said.append(f"{n} tensor(s) in `{where}`")
        if not said:
            raise NotApplicable(f"{self.name}: every optimizer reachable from the watched one steps the model's own "
                                "parameters (no stale copies)")
        self.did.append("relinked to the model's parameters: " + "; ".join(said))

    @staticmethod
    def _relink(o: Any, model: list[torch.Tensor], own: set[int]) -> int:
        used = {id(p) for g in o.param_groups for p in g["params"] if id(p) in own}
        count = 0
        for group in o.param_groups:
            for i, stale in enumerate(group["params"]):
                if id(stale) in own:
                    continue
                fit = [p for p in model if id(p) not in used and p.shape == stale.shape and p.dtype == stale.dtype]
                if not fit:
                    continue
                with torch.no_grad():
                    new = next((p for p in fit if torch.equal(p.detach(), stale.detach())), fit[0])
                used.add(id(new))
                group["params"][i] = new
                if stale in o.state:
                    o.state[new] = o.state.pop(stale)
                count += 1
        return count
