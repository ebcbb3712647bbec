"""zero_grad_after_step: an `optimizer.zero_grad()` called between a backward and the step that would use its
gradients is held back until that step has run (tests no_gradient_path).

`loss.backward(); optimizer.zero_grad(); optimizer.step()` wipes every gradient the backward produced (since torch 2.0
it sets `.grad` to None) before the optimizer reads it: no parameter ever moves (Tony-Y/pytorch_warmup#12). For the
run, a hook on each parameter's gradient accumulation marks gradients no step has used yet; the optimizer's
`zero_grad` called while such gradients exist is deferred to the optimizer's step post-hook, so the step uses them and
the next backward starts from zero, as in the usual order. A `zero_grad` called anywhere else runs as written. Not
applicable: no `zero_grad` of the watched optimizer came between a backward and its step before the first `observe`
(the script zeroes first, or clears the gradients some other way, as `model.zero_grad()`).
"""

from __future__ import annotations

from typing import Any

from .base import Intervention, NotApplicable, require_optimizer


class ZeroGradAfterStep(Intervention):
    name = "zero_grad_after_step"
    tests = ("no_gradient_path",)
    changes = ("an optimizer.zero_grad() called between a backward and the step that uses its gradients deferred to "
               "right after that step")

    def setup(self, watch: Any) -> None:
        opt = self._opt = require_optimizer(watch, self.name)
        self._fresh = False  # gradients a backward produced that no step has used yet
        self._deferred: tuple[tuple, dict] | None = None
        self._held = self._used = 0
        self._hooks = [p.register_post_accumulate_grad_hook(self._accumulated)
                       for g in opt.param_groups for p in g["params"] if p.requires_grad]
        original = self._original = opt.zero_grad

        def zero_grad(*args: Any, **kwargs: Any) -> None:
            if not self._fresh:
                return original(*args, **kwargs)
            self._deferred = (args, kwargs)
            self._held += 1
            return None

        opt.zero_grad = zero_grad

    def _accumulated(self, param: Any) -> None:
        self._fresh = True

    def before_step(self, optimizer: Any) -> None:
        if self._deferred is not None:
            self._used += 1
            self.reached[:] = [f"{self._used} optimizer step(s) used the gradients a zero_grad called before them "
                               "would have wiped"]

    def after_step(self, optimizer: Any) -> None:
        self._fresh = False
        if self._deferred is not None:
            args, kwargs = self._deferred
            self._deferred = None
            self._original(*args, **kwargs)
            self.did[:] = [f"{self._held} zero_grad call(s) between a backward and its step deferred to after the step"]

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if not self._held:
            raise NotApplicable(f"{self.name}: no zero_grad of the optimizer came between a backward and its step "
                                "before the first observe")

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        if self._opt.__dict__.get("zero_grad") is not None:
            del self._opt.zero_grad
