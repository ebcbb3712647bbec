"""The narrow contract every probe implements, and what `observe` hands to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import torch

if TYPE_CHECKING:
    from .session import ProbeSession

Number = torch.Tensor | float | int


@dataclass
class Observation:
    """One training step as the user reports it to `ProbeSession.observe`."""

    step: int
    losses: Mapping[str, Number] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict)
    chance: Mapping[str, float] = field(default_factory=dict)
    embeddings: Mapping[str, torch.Tensor] = field(default_factory=dict)
    logits: Mapping[str, torch.Tensor] = field(default_factory=dict)
    batch_size: int | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    targets: torch.Tensor | None = None  # the class index each logits row is trained toward, when given


def module_label(name: str) -> str:
    """Record target for a module path; the root module is ``<root>``."""
    return name or "<root>"


class Probe:
    """Attach (register hooks through the session's HookSet), compute on schedule, emit records.

    Cheap work runs when ``session.due(step)``; expensive work when
    ``session.due(step, expensive=True)``. Values computed inside forward hooks go to
    ``session.buffer.defer`` and are stamped with the step of the next `observe`.
    """

    name: ClassVar[str] = "probe"

    def setup(self, session: "ProbeSession") -> None:
        """Register hooks; called once when the session opens."""

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        """Called from `ProbeSession.observe` (after backward, before the optimizer step)."""

    def after_step(self, session: "ProbeSession") -> None:
        """Called once after the optimizer step (optimizer post-hook or `after_step`)."""

    def close(self, session: "ProbeSession") -> None:
        """Release per-probe state; hooks are removed by the session."""
