"""What every intervention is: a small declared class, like a rule.

An intervention changes one thing in a user's run through the objects `diagnose.watch` was handed (the
model, the optimizer, the step's logits and embeddings), so the user's script runs unmodified. Each
declares what it changes (`changes`), which root causes it tests (`tests`, ids of
`diagnose.core.rules.causes`), and how its outcome is judged (`judged`, shared by default: see
`diagnose.lab.script_ablation`). Where it cannot act in this run (no temperature parameter, nothing frozen)
it raises `NotApplicable` with the reason, instead of running as a no-op; the run then stops at once and
the report says why.

Hooks, all optional:
  setup(watch)                when the watch opens (the model and optimizer exist; no step taken)
  observe(watch, step, seen)  at each `observe` (after backward, before optimizer.step); `seen` holds
                              the step's logits, embeddings and extras as the user passed them
  before_step(optimizer)      an optimizer step pre-hook (every step, whoever calls optimizer.step)
  after_step(optimizer)       its post-hook
  close()                     when the watch closes: undo global patches
"""

from __future__ import annotations

import sys
from typing import Any, Callable, ClassVar


class NotApplicable(Exception):
    """The intervention cannot act on this run; the message says why (one line)."""


class Intervention:
    name: ClassVar[str]
    tests: ClassVar[tuple[str, ...]]
    changes: ClassVar[str]
    judged: ClassVar[str] = ("learns where the baseline does not, or ends at least 0.05 ln(B) lower than the "
                             "baseline of the same seed")
    defaults: ClassVar[dict[str, Any]] = {}
    # finding ids whose measured mechanism this fix undoes: where a ranked cause carries one, the ablation tries this
    # fix first among those testing the cause (`for_cause`)
    answers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"fix {self.name}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                             f"expected {', '.join(self.defaults) or 'none'}")
        self.params = {**self.defaults, **params}
        self.did: list[str] = []  # what it actually changed in this run, for the report
        # measured evidence that the change altered the run's tensors (an input it shifted, weights a changed lr
        # moved, a logit scale it moved): with it, a fix run that ends at the baseline's loss to the last bit is
        # a test that happened and failed (refuted); without it, one that may not have (not applicable)
        self.reached: list[str] = []

    def setup(self, watch: Any) -> None:
        pass

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        pass

    def after_observe(self, watch: Any) -> None:
        """After the watch's probes read the step (a fix that acts on what `observe` saw, at that step)."""

    def before_step(self, optimizer: Any) -> None:
        pass

    def after_step(self, optimizer: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def require_acted_by_second_observe(self, acted: int, reason: str) -> None:
        """Count this `observe`; from the second on (one whole step seen), not applicable while the fix has still
        not acted (`acted` == 0): `reason` says what it found no call of."""
        self._observes = getattr(self, "_observes", 0) + 1
        if self._observes >= 2 and not acted:
            raise NotApplicable(f"{self.name}: {reason}")

    def uses_step_hooks(self) -> bool:
        cls = type(self)
        return cls.before_step is not Intervention.before_step or cls.after_step is not Intervention.after_step

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, "tests": list(cls.tests), "changes": cls.changes, "judged": cls.judged,
                "defaults": dict(cls.defaults)}


OWN_PACKAGES = ("diagnose", "probes")  # the watch's own code: its probes read the step's tensors as they are


def called_by_own_code(depth: int = 2) -> bool:
    """Whether the code that called the caller of this one (a patched torch function), past torch's own frames, is
    the watch's own code.

    A fix that patches a torch function (the cross-entropy, `no_grad`) changes the user's run; the watch's probes
    call the same functions on the step's tensors and must see them unchanged."""
    frame = sys._getframe(depth)
    while frame is not None and (frame.f_globals.get("__name__", "").split(".", 1)[0] == "torch"
                                 or frame.f_code.co_name == "__torch_function__"):
        frame = frame.f_back  # through torch's own layers (nn.CrossEntropyLoss, the no_grad decorator) and other
        # function modes' handlers (the entropy probe's mode hands the model's operations on from its own)
    return frame is not None and frame.f_globals.get("__name__", "").split(".", 1)[0] in OWN_PACKAGES


def wrap_cross_entropy(transform: Callable[[Any, Any], Any] | None = None,
                       targets: Callable[[Any, Any], Any] | None = None) -> Callable[[], None]:
    """`torch.nn.functional.cross_entropy` (which `nn.CrossEntropyLoss` and Hugging Face's CLIP loss call) with, on
    the script's calls, its target passed through `targets(input, target)` and then its input through
    `transform(input, target)`; returns the undo."""
    import torch.nn.functional as F

    orig = F.cross_entropy

    def cross_entropy(input, target, *args, **kwargs):
        if not called_by_own_code():
            if targets is not None:
                target = targets(input, target)
            if transform is not None:
                input = transform(input, target)
        return orig(input, target, *args, **kwargs)

    F.cross_entropy = cross_entropy

    def undo() -> None:
        F.cross_entropy = orig
    return undo


def declared_logits_shapes(watch: Any) -> set[tuple[int, int]]:
    """The contrastive logits' shape before the first step: B x B from the batch size given to the watch."""
    b = getattr(watch, "batch_size", None)
    return {(int(b), int(b))} if b else set()


def note_logits_shape(shapes: set[tuple[int, int]], seen: dict[str, Any]) -> None:
    """Add the shape (and its transpose) of the 2-d logits handed to this `observe` to `shapes`."""
    logits = seen_logits(seen)
    if getattr(logits, "dim", None) is not None and logits.dim() == 2:
        shapes |= {tuple(logits.shape), tuple(logits.shape)[::-1]}


def seen_logits(seen: dict[str, Any]) -> Any:
    """The step's logits as the script handed them to `observe` (the first matrix of a dict of them), or None."""
    logits = seen.get("logits")
    return next(iter(logits.values()), None) if isinstance(logits, dict) else logits


def trainable_named(model: Any) -> list[tuple[str, Any]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def require_optimizer(watch: Any, name: str) -> Any:
    if watch.optimizer is None:
        raise NotApplicable(f"{name} needs the optimizer: pass it to diagnose.watch(model, optimizer, ...)")
    return watch.optimizer
