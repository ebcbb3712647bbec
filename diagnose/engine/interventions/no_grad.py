"""grad_through_no_grad: `torch.no_grad()` stops disabling gradients while the model trains (tests
no_gradient_path when the path is cut by a no_grad block, which `unfreeze` cannot reach).

A tower or a projection called inside ``with torch.no_grad():`` (or a ``@torch.no_grad()`` function) gets no
gradient whatever its ``requires_grad``. For the run, `torch.no_grad`'s enter is patched: while the watched
model is in training mode it keeps gradients on (evaluation in ``model.eval()`` is untouched), and each step the
parameters that now receive gradients but are in no param group join the optimizer (a script that froze the
tower for the no_grad block usually left it out of the optimizer too). Parameters with requires_grad=False stay
frozen: that is `unfreeze`'s question. `.detach()` cannot be undone from outside, nor `torch.inference_mode()`.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, called_by_own_code, require_optimizer
from .parameters import add_missing


class GradThroughNoGrad(Intervention):
    name = "grad_through_no_grad"
    tests = ("no_gradient_path",)
    changes = ("torch.no_grad() blocks keep gradients on while the model is in training mode; new parameters "
               "with gradients join the optimizer")

    def setup(self, watch: Any) -> None:
        require_optimizer(watch, self.name)
        model = watch.model
        self._model, self._skipped, self._added = model, 0, 0
        self._enter = torch.no_grad.__enter__
        outer = self

        def __enter__(self_ng) -> None:  # noqa: N807 - the context manager's own method
            self_ng.prev = torch.is_grad_enabled()
            if model.training and not called_by_own_code():  # the watch's probes keep their no_grad blocks
                outer._skipped += 1
                return
            torch.set_grad_enabled(False)

        torch.no_grad.__enter__ = __enter__

    def before_step(self, optimizer: Any) -> None:
        self._added += len(add_missing(self._model, optimizer))
        self.did[:] = [f"{self._skipped} no_grad block(s) ran with gradients in training mode; {self._added} parameter "
                       "tensor(s) added to the optimizer"]

    def close(self) -> None:
        torch.no_grad.__enter__ = self._enter
