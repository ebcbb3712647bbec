"""The forward scope: what runs around the model's forward pass on scheduled steps.

Some observations cannot be made by a hook on one module: a softmax written as ``sim.softmax(-1)``
(a tensor method), ``torch.softmax``, ``F.softmax`` or ``F.scaled_dot_product_attention`` imported
by name live inside a module's ``forward`` with no module of their own. They are seen through a
``torch.overrides.TorchFunctionMode``, and which modules ran with autograd on or off through a
global module pre-hook. Both cost Python time on every torch call / module call while active, so
they are active only inside the model's forward and only on the steps the schedule asks for.

The scope opens when the root module, or one of its direct children called on its own (a user who
calls ``model.text(tokens)``), starts a forward, and closes when that outermost call returns or
raises (``always_call`` post-hooks). `ForwardScope.close` unwinds whatever is still open, so no mode
or global hook outlives the session, whatever happened inside the block.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

# an entry opens on the outermost forward of a due step, given the module whose call opened it;
# returns a context to close at its end
Entry = Callable[[nn.Module], contextlib.AbstractContextManager | None]


class ForwardScope:
    def __init__(self, hooks, model: nn.Module, due: Callable[[], bool],
                 on_start: Callable[[], None] | None = None) -> None:
        self._entries: list[Entry] = []
        self._on_start = on_start  # called at every outermost forward (the schedule times the step from it)
        self._open: list[contextlib.AbstractContextManager] = []
        self._depth = 0
        self._due = due
        self.forwards = 0  # outermost forwards seen inside the scope
        # compiled modules are left alone: dynamo would trace the mode and the stack walk, and the
        # graphs it builds bypass both anyway; coverage lists them as not observed
        tops = [m for m in (model, *model.children()) if not is_compiled(m)]
        for mod in tops:
            hooks.forward_pre_hook(mod, self._enter)
            hooks.forward_hook(mod, self._exit, always_call=True)
        hooks.on_remove(self.close)

    def add(self, entry: Entry) -> None:
        self._entries.append(entry)

    def _enter(self, module, args) -> None:
        self._depth += 1
        if self._depth == 1 and self._on_start is not None:
            self._on_start()
        if self._depth > 1 or not self._entries or _compiling() or not self._due():
            return
        self.forwards += 1
        for entry in self._entries:
            ctx = entry(module)
            if ctx is not None:
                ctx.__enter__()
                self._open.append(ctx)

    def _exit(self, module, args, output) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0:
            self.close()

    def close(self) -> None:
        # modes form a stack: close in reverse order of opening
        while self._open:
            self._open.pop().__exit__(None, None, None)
        self._depth = 0


def is_compiled(module: nn.Module) -> bool:
    return type(module).__name__ == "OptimizedModule" or getattr(module, "_compiled_call_impl", None) is not None


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    fn = getattr(compiler, "is_compiling", None)
    return bool(fn()) if fn is not None else False
