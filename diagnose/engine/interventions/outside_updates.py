"""undo_outside_updates: a parameter write outside `optimizer.step()` is undone (tests weight_decay_collapse
when the decay is written by hand, replicas_out_of_sync when a rank changes its parameters by itself, and
learning_rate_too_low when the script copies other weights into the model, an EMA or a checkpoint never restored,
so that the net step the weights take is a fraction of the optimizer's).

A hand-written decoupled decay (``p.mul_(1 - wd)`` after the step, without the lr), a manual renorm or a
per-rank parameter change happens where no param group's ``weight_decay`` holds it, so `no_weight_decay`
cannot reach it. Here the optimizer's step post-hook snapshots the trainable parameters; before the next
forward of the watched model (a forward pre-hook on the top module) and before the next optimizer step (its
pre-hook: a write between backward and step, or a script that calls sub-modules directly) every parameter
that differs from its snapshot was changed by something other than the optimizer: it is restored and
counted. If `after` steps passed and nothing was ever changed outside the optimizer, the fix says so and
the run stops (not applicable) instead of running as a no-op.
"""

from __future__ import annotations

from typing import Any

import torch

from probes._hooks import OwnHook

from .base import Intervention, NotApplicable, require_optimizer, trainable_named


class UndoOutsideUpdates(Intervention):
    name = "undo_outside_updates"
    tests = ("weight_decay_collapse", "replicas_out_of_sync", "learning_rate_too_low")
    changes = ("trainable parameters changed outside optimizer.step() (a hand-written decay, a renorm) restored "
               "to their value after the last step, before the next forward and the next step")
    answers = ("steps_undone_outside", "decay_written_outside")
    # a write every step (a decay) shows at once; a periodic one (a checkpoint save copying an EMA in, every 10-25
    # steps) within 30; a rarer one could not show its effect in an ablation's hundred steps anyway
    defaults = {"after": 30}

    def setup(self, watch: Any) -> None:
        require_optimizer(watch, self.name)
        self._named = trainable_named(watch.model)
        if not self._named:
            raise NotApplicable("undo_outside_updates: the model has no trainable parameter")
        self._snap: list[torch.Tensor] | None = None
        self._steps = self._checks = self._restores = 0
        self._changed: dict[str, float] = {}  # name -> largest relative change undone
        self._handle = watch.model.register_forward_pre_hook(OwnHook(lambda m, a: self._undo()))

    def after_step(self, optimizer: Any) -> None:
        self._steps += 1
        with torch.no_grad():
            self._snap = [p.detach().clone() for _, p in self._named]

    def before_step(self, optimizer: Any) -> None:
        self._undo()

    def _undo(self) -> None:
        """Restore every parameter that differs from its snapshot (nothing before the first step)."""
        if self._snap is None:
            return
        self._checks += 1
        with torch.no_grad():
            for (name, p), s in zip(self._named, self._snap):
                if torch.equal(p, s):
                    continue
                rel = float((p.float() - s.float()).norm() / s.float().norm().clamp_min(1e-12))
                self._changed[name] = max(self._changed.get(name, 0.0), rel)
                self._restores += 1
                p.copy_(s)
        self._describe()

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if self._steps >= int(self.params["after"]) and not self._changed:
            raise NotApplicable(f"undo_outside_updates: no parameter changed outside optimizer.step() in "
                                f"{self._steps} steps ({self._checks} checks against the post-step values of "
                                f"{len(self._named)} parameter tensors)")

    def _describe(self) -> None:
        if not self._changed:
            return
        worst = sorted(self._changed.items(), key=lambda kv: -kv[1])
        names = ", ".join(f"{n} ({r:.2g})" for n, r in worst[:3]) + (" ..." if len(worst) > 3 else "")
        self.did[:] = [f"{self._restores} outside write(s) undone on {len(worst)} of {len(self._named)} parameter "
                       f"tensors over {self._steps} steps; largest relative change: {names}"]

    def close(self) -> None:
        self._handle.remove()
