"""grad_through_no_grad: `torch.no_grad()` stops disabling gradients while the model trains (tests
no_gradient_path when the path is cut by a no_grad block, which `unfreeze` cannot reach).

A tower or a projection called inside ``with torch.no_grad():`` (or a ``@torch.no_grad()`` function) gets no
gradient whatever its ``requires_grad``. For the run, `torch.no_grad`'s enter is patched: while the watched
model is in training mode it keeps gradients on (evaluation in ``model.eval()`` is untouched), and each step the
parameters that now receive gradients but are in no param group join the optimizer (a script that froze the
tower for the no_grad block usually left it out of the optimizer too). Parameters with requires_grad=False stay
frozen: that is `unfreeze`'s question. `torch.inference_mode()` cannot be undone from outside.

A `.detach()` the script's loss lines put on the logits themselves (`scale * (img @ txt.t()).detach()`: the detach
meant for the locked side wraps the whole similarity, and only the scale is left with a gradient) is undone: a
detach called outside every module's forward (`ops.watch_ops`) on a tensor with a gradient and the shape of the
logits handed to `observe` (known from the batch size given to the watch, else from the first `observe`) returns
the tensor itself (and `.numpy()` on it detaches first). A detach of embeddings or features (the locked side's, as
meant) stays. Not applicable: by the second `observe` no no_grad block ran in training mode and no detach of the
logits was undone.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, called_by_own_code, declared_logits_shapes, note_logits_shape, require_optimizer
from .ops import Call, watch_ops
from .parameters import add_missing


class GradThroughNoGrad(Intervention):
    name = "grad_through_no_grad"
    tests = ("no_gradient_path",)
    changes = ("torch.no_grad() blocks keep gradients on while the model is in training mode; new parameters "
               "with gradients join the optimizer; a .detach() of the logits in the loss lines undone")

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
        self._shapes = declared_logits_shapes(watch)
        self._kept = 0
        self._undo_ops = watch_ops({"detach": self._keep_graph, "numpy": self._numpy})

    def _keep_graph(self, call: Call) -> Any:
        x = call.args[0] if call.args else None
        if (isinstance(x, torch.Tensor) and x.requires_grad and x.dim() == 2 and tuple(x.shape) in self._shapes
                and not call.kwargs and len(call.args) == 1):
            self._kept += 1
            x._dg_kept_graph = True
            return x
        return call.run()

    def _numpy(self, call: Call) -> Any:
        x = call.args[0] if call.args else None
        if getattr(x, "_dg_kept_graph", False) and x.requires_grad:
            return call.run(x.detach(), *call.args[1:])
        return call.run()

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        note_logits_shape(self._shapes, seen)
        self.require_acted_by_second_observe(self._skipped + self._kept, "no torch.no_grad block ran while the model "
                                             "trained and no .detach() of the logits in the first step")
        self._say()

    def before_step(self, optimizer: Any) -> None:
        self._added += len(add_missing(self._model, optimizer))
        self._say()

    def _say(self) -> None:
        self.did[:] = [f"{self._skipped} no_grad block(s) ran with gradients in training mode; {self._added} parameter "
                       f"tensor(s) added to the optimizer; {self._kept} .detach() of the logits undone"]

    def close(self) -> None:
        torch.no_grad.__enter__ = self._enter
        self._undo_ops()
