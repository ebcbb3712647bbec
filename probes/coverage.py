"""What the probes saw of a model and what they did not, said out loud (`ProbeSession.coverage`).

A probe that cannot see something must not stay silent: a text projection that is frozen, a tower
that ran under ``torch.no_grad()``, an attention written in a way no hook reaches, a watched output
that never fired or a compiled region all change what the findings can mean.

Module calls are counted on the expensive schedule only, inside the forward scope (a global module
pre-hook is active there and nowhere else, see `_scope.py`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .base import module_label


class ModuleCalls:
    """Forward calls per module of the model, with autograd on and off, while the scope is open."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.calls: dict[str, list[int]] = {}  # label -> [calls without grad, calls with grad]

    @contextlib.contextmanager
    def counting(self, top: nn.Module) -> Iterator[None]:
        names, calls = self.names, self.calls

        def hook(module, args):
            name = names.get(id(module))
            if name is not None:
                calls.setdefault(module_label(name), [0, 0])[torch.is_grad_enabled()] += 1

        hook(top, ())  # the call that opened the scope started before the global hook existed
        handle = nn.modules.module.register_module_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()


def _outermost(paths: list[str]) -> list[str]:
    """Drop the paths whose ancestor is listed too (``a.b`` when ``a`` is there)."""
    keep = []
    for p in sorted(paths, key=lambda x: (x.count("."), x)):
        if p == "<root>" or not any(p.startswith(k + ".") or k == "<root>" for k in keep):
            keep.append(p)
    return sorted(keep)


def frozen_modules(model: nn.Module) -> dict[str, int]:
    """Outermost modules whose parameters are all frozen -> their parameter count (elements)."""
    frozen = {}
    for path, mod in model.named_modules():
        params = list(mod.parameters())
        if params and not any(p.requires_grad for p in params):
            frozen[module_label(path)] = sum(p.numel() for p in params)
    return {k: frozen[k] for k in _outermost(list(frozen))}


def no_grad_only(model: nn.Module, calls: dict[str, list[int]]) -> list[str]:
    """Outermost modules with trainable parameters of their own that were called, but never with
    autograd on: their parameters cannot learn from this loss."""
    out = []
    for path, mod in model.named_modules():
        label = module_label(path)
        trainable = any(p.requires_grad for p in mod.parameters(recurse=False))
        counts = calls.get(label)
        if trainable and counts and counts[1] == 0 and counts[0] > 0:
            out.append(label)
    return _outermost(out)


def never_called(model: nn.Module, calls: dict[str, list[int]]) -> list[str]:
    """Modules with trainable parameters of their own not called in any measured forward.

    The root module is never listed: a model driven through its own methods (`encode_image`/`encode_text`,
    a tower called directly) never runs the root's forward, and the root's own parameters (a logit scale)
    are then read directly by the loss, not through a call. Whether they learn is the gradient probes'
    question (`params_outside_optimizer`, the per-parameter gradient records), not a call count's."""
    if not calls:
        return []
    out = [module_label(p) for p, m in model.named_modules()
           if p and any(q.requires_grad for q in m.parameters(recurse=False)) and module_label(p) not in calls]
    return _outermost(out)


def compiled_modules(model: nn.Module) -> list[str]:
    """Modules run through torch.compile: hooks and the softmax mode do not see inside them."""
    from ._scope import is_compiled

    return _outermost([module_label(p) for p, m in model.named_modules() if is_compiled(m)])
