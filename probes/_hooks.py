"""Scoped hook registration: every handle a session creates goes through one `HookSet`.

PyTorch hook quirks, kept in this one place (the probes rely on each of them):

1. Module forward hooks fire only through ``module(...)`` (``nn.Module.__call__``); calling
   ``module.forward(...)`` directly, or a ``torch.compile``d module, skips them silently.
2. A module with *any* hook leaves ``nn.Module._call_impl``'s hook-free fast path: each call then
   pays a few microseconds of Python.  So probes hook only the module types they read
   (``nn.Softmax``, norms, attention) and return early when the step is not scheduled.
3. A forward hook that returns a value *replaces* the module output; ours return ``None`` except
   where they deliberately restore the output shape the caller asked for (MultiheadAttention).
4. ``register_forward_pre_hook(..., with_kwargs=True)`` sees keyword arguments only if the caller
   passed them as keywords; to change an argument that may arrive positionally, bind the call to
   the signature first (see ``bind_call``) or ``forward`` receives it twice.
5. ``nn.MultiheadAttention`` returns head-averaged weights by default and none when
   ``need_weights=False`` (its fused fast path, taken in eval mode); asking for per-head weights
   forces the slow path, which is why it is done only on the expensive schedule.
6. Patching ``torch.nn.functional.scaled_dot_product_attention`` affects call sites that look the
   name up at call time (``F.scaled_dot_product_attention(...)``, MultiheadAttention, Hugging Face
   ``sdpa_attention_forward``); a ``from torch.nn.functional import scaled_dot_product_attention``
   done at import time keeps the original and is not seen.  The patch is process-global while
   the session is open.
7. Optimizer step hooks (``register_step_pre_hook`` / ``register_step_post_hook``) are
   per-instance and return removable handles; the ``torch.optim.optimizer.register_optimizer_*``
   variants are global and are never used here.
8. Full backward module hooks break on in-place ops on the module output and on views, so
   gradients are read from ``param.grad`` after ``backward()`` instead of from backward hooks.
9. A hook closure that captured a tensor keeps it alive for as long as the handle exists; hooks
   here capture only modules, names and the session, and reduce activations to scalars at once.
10. A forward hook does not run when ``forward`` raises unless registered with ``always_call=True``;
   the forward scope (``_scope.py``) relies on it to close a TorchFunctionMode it opened.
11. A ``TorchFunctionMode`` sees tensor methods (``x.softmax``), ``torch.*`` and ``F.*`` calls,
   including functions imported by name, but not the calls made inside a function it already
   intercepted (``F.multi_head_attention_forward`` is seen whole); compiled graphs bypass it.
12. A module's hooks are part of its pickled state: ``torch.save(model)`` of a whole model (not its
   ``state_dict``) pickles every hook function, and a closure cannot be pickled. While a session is open,
   ``torch.save`` is wrapped (`SAVING`) so the watched model is saved without the hooks of
   this package (the file then loads where this package is not installed). Elsewhere (``pickle.dumps``,
   ``copy.deepcopy``: an EMA twin) each hook a session keeps becomes an inert `OwnHook`: the copy does not feed
   this session (batch_mixing's, armed for one step, stays a closure: torch.compile traces hooks).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import weakref
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class OwnHook:
    """A hook of this package as a module holds it: calls `fn`; a copy of the module (`copy.deepcopy`, an EMA
    twin) or its pickle gets an inert hook instead of the session behind `fn` (quirk 12)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable | None) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return None if self.fn is None else self.fn(*args, **kwargs)

    def __deepcopy__(self, memo: dict) -> "OwnHook":
        return OwnHook(None)

    def __reduce__(self) -> tuple:
        return OwnHook, (None,)


class HookSet:
    """Owns every hook handle and monkey-patch made by one probe session; `remove` undoes all."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []
        self._patches: list[tuple[Any, str, Any]] = []
        self._on_remove: list[Callable[[], None]] = []

    def forward_hook(self, module: nn.Module, fn: Callable, *, with_kwargs: bool = False,
                     always_call: bool = False) -> None:
        self._handles.append(module.register_forward_hook(OwnHook(fn), with_kwargs=with_kwargs,
                                                          always_call=always_call))

    def forward_pre_hook(self, module: nn.Module, fn: Callable, *, with_kwargs: bool = False) -> None:
        self._handles.append(module.register_forward_pre_hook(OwnHook(fn), with_kwargs=with_kwargs))

    def optimizer_pre_hook(self, optimizer: torch.optim.Optimizer, fn: Callable) -> None:
        self._handles.append(optimizer.register_step_pre_hook(fn))

    def optimizer_post_hook(self, optimizer: torch.optim.Optimizer, fn: Callable) -> None:
        self._handles.append(optimizer.register_step_post_hook(fn))

    def patch(self, owner: Any, attr: str, new: Any) -> Any:
        """Replace ``owner.attr`` by ``new`` until `remove`; returns the original."""
        original = getattr(owner, attr)
        self._patches.append((owner, attr, original))
        setattr(owner, attr, new)
        return original

    def on_remove(self, fn: Callable[[], None]) -> None:
        """Run `fn` first thing in `remove` (closes modes and global hooks that are still open)."""
        self._on_remove.append(fn)

    def remove(self) -> None:
        while self._on_remove:
            self._on_remove.pop()()
        # Patches are undone in reverse order so nested sessions unwind to the true original.
        while self._patches:
            owner, attr, original = self._patches.pop()
            setattr(owner, attr, original)
        while self._handles:
            self._handles.pop().remove()

    def __len__(self) -> int:
        return len(self._handles) + len(self._patches)


_SIGNATURES: dict[type, inspect.Signature] = {}


def bind_call(module: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Arguments of ``module.forward(*args, **kwargs)`` by name (quirk 4)."""
    cls = type(module)
    sig = _SIGNATURES.get(cls)
    if sig is None:
        sig = _SIGNATURES[cls] = inspect.signature(cls.forward)
    bound = sig.bind(module, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop(next(iter(sig.parameters)))  # `self`
    return arguments


OWN_PACKAGES = ("probes", "diagnose")
# hook tables of a module, each with the tables of flags kept under the same handle ids
_HOOK_TABLES = {"_forward_hooks": ("_forward_hooks_with_kwargs", "_forward_hooks_always_called"),
                "_forward_pre_hooks": ("_forward_pre_hooks_with_kwargs",)}


def _own(fn: Any) -> bool:
    """A hook defined in this package (a function, closure, bound method or partial of one)."""
    module = getattr(fn, "__module__", None) or getattr(getattr(fn, "func", None), "__module__", None) or ""
    return module.partition(".")[0] in OWN_PACKAGES


@contextlib.contextmanager
def without_own_hooks(model: nn.Module) -> Iterator[None]:
    """This package's hooks taken out of every module of `model` for the duration (quirk 12), and the methods it
    patched on a module instance (an ablation's wrapped `encode_image`). Each table keeps its identity and order
    (the handles stay valid and remove what they registered)."""
    saved: list[tuple[dict, list]] = []
    try:
        for module in model.modules():
            patched = [k for k, v in module.__dict__.items() if callable(v) and not isinstance(v, nn.Module)
                       and _own(v)]
            if patched:
                saved.append((module.__dict__, list(module.__dict__.items())))
                for k in patched:
                    del module.__dict__[k]
            for table, flag_tables in _HOOK_TABLES.items():
                hooks = module.__dict__.get(table)
                ours = [k for k, fn in hooks.items() if _own(fn)] if hooks else []
                if not ours:
                    continue
                for name in (table, *flag_tables):
                    d = module.__dict__.get(name)
                    if d is not None:
                        saved.append((d, list(d.items())))
                        for k in ours:
                            d.pop(k, None)
        yield
    finally:
        for d, items in saved:
            d.clear()
            d.update(items)


class _Saving:
    """`torch.save` wrapped once for the process while any watched model is registered: each save pickles every
    registered model (alone or inside what is saved) without this package's hooks. One wrapper and a count, so
    watches that open and close in any order leave `torch.save` as they found it; weak references, so a watch never
    closed keeps no model alive."""

    def __init__(self) -> None:
        self.models: list[weakref.ref] = []
        self.original: Callable | None = None

    def register(self, model: nn.Module) -> Callable[[], None]:
        """Register `model`; returns its unregister (the wrapper goes when the last model does)."""
        if self.original is None:
            self.original = torch.save

            @functools.wraps(self.original)
            def save(*args: Any, **kwargs: Any) -> Any:
                return self._save(*args, **kwargs)
            torch.save = save
        ref = weakref.ref(model)
        self.models.append(ref)

        def unregister() -> None:
            if ref in self.models:
                self.models.remove(ref)
            self.models = [r for r in self.models if r() is not None]  # watches never closed, models gone
            if not self.models and self.original is not None:
                torch.save, self.original = self.original, None
        return unregister

    def _save(self, *args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            for ref in list(self.models):
                model = ref()
                if model is not None:
                    stack.enter_context(without_own_hooks(model))
            return self.original(*args, **kwargs)


SAVING = _Saving()
