"""Learning-rate interventions, applied around every optimizer step (a step pre-hook sets the lr each
param group steps with; the post-hook gives the user's value back), so they compose with whatever
scheduler the script runs: the scheduler keeps stepping the user's own lr.

  lr_down   every group's lr x 0.1, lower where the first step is still above a healthy run's largest (1e-2 of the
            weights' norm) or an early step still rewrites the model (that step taken again at the lower lr; tests
            learning_rate_too_high)
  lr_up     every group's lr up by the factor that brings the first update ratio to 1e-2, at least x10 (tests
            learning_rate_too_low)
  warmup    a linear warm-up over the first `steps` optimizer steps on top of the user's schedule
            (tests learning_rate_too_high: the early steps that rewrite the layers)
  hold_lr   each group steps at its starting lr (the scheduler's `initial_lr`, else the lr when the watch
            opened) whatever the schedule says (tests lr_schedule)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...core.rules.gradients import UPDATE_RATIO_HIGH
from .base import Intervention, NotApplicable, require_optimizer

# A first optimizer step that moves the whole model by 1e-2 of its norm is where healthy runs peak (Adam's first
# steps are sign-like and are the run's largest; `diagnose.core.rules.gradients`, beside UPDATE_RATIO_HIGH): the
# size `lr_up` brings a too-small first step to and `lr_down` a too-large one.
HEALTHY_PEAK_RATIO = 1e-2
REACH_CHECKS = 20  # optimizer steps over which a changed lr is looked for in the weights it moved
LR_REL_TOL = 1e-6  # an lr within this of the script's is the same lr (float32's resolution is ~6e-8)


def update_ratio(params: list, before: list) -> float:
    """How far one optimizer step moved the weights: |theta - theta_before| / |theta_before| over all of them."""
    norm = sum(float(b.float().pow(2).sum()) for b in before) ** 0.5
    moved = sum(float((p - b).float().pow(2).sum()) for p, b in zip(params, before)) ** 0.5
    return moved / norm if norm > 0 else 0.0


class _AroundStep(Intervention):
    def setup(self, watch: Any) -> None:
        opt = require_optimizer(watch, self.name)
        if any(g.get("lr") is None for g in opt.param_groups):
            raise NotApplicable(f"{self.name}: the optimizer has no lr to change (lr=None: it sizes its own steps, as "
                                "Adafactor with relative_step=True; see own_step_off)")
        self._saved: list[Any] = []
        self._probe: list[Any] | None = None  # the weights before a step at a changed lr, until one is seen moving
        self._steps = 0
        self._start = [g.get("initial_lr", g["lr"]) for g in opt.param_groups]

    def factor(self, group_index: int, lr: float) -> float:
        raise NotImplementedError

    def before_step(self, optimizer: Any) -> None:
        self._saved = [g["lr"] for g in optimizer.param_groups]
        changed = False
        for i, g in enumerate(optimizer.param_groups):
            new = self.new_lr(i, g["lr"])
            # a change float32 weights can resolve (a schedule's own rounding of the same lr is not one)
            changed = changed or not math.isclose(float(new), float(g["lr"]), rel_tol=LR_REL_TOL)
            g["lr"] = new
        if not self.did:
            self.did.append(self.text(optimizer))
        self._probe = ([p.detach().clone() for g in optimizer.param_groups for p in g["params"]]
                       if changed and not self.reached and self._steps < REACH_CHECKS else None)

    def after_step(self, optimizer: Any) -> None:
        for g, lr in zip(optimizer.param_groups, self._saved):
            g["lr"] = lr
        probe, self._probe = self._probe, None
        if probe is not None:
            params = [p.detach() for g in optimizer.param_groups for p in g["params"]]
            moved = sum(not torch.equal(p, b) for p, b in zip(params, probe))
            if moved:
                self.reached.append(f"optimizer step {self._steps + 1}, at the changed lr, moved {moved} of "
                                    f"{len(params)} weight tensors")
        self._steps += 1

    def new_lr(self, i: int, lr: Any) -> Any:
        return lr * self.factor(i, lr)

    def text(self, optimizer: Any) -> str:
        return self.changes


# optimizers whose step changes each weight by lr x (a quantity their state and the gradient fix): the change of a
# step taken at one lr, scaled by k, is that step at k x the lr (decoupled decay lr x wd x w included)
LINEAR_IN_LR = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam")


class LrDown(_AroundStep):
    """x `factor` (0.1), lower on the first optimizer step where that step still moves the whole model by more than
    `target_ratio` of its weights' norm (1e-2, where healthy runs peak: `HEALTHY_PEAK_RATIO`, the level `lr_up` brings
    a first step to), to the factor that brings it there; and x0.1 again while one of the next `guard_steps` steps
    still moves it by more than `guard` (UPDATE_RATIO_HIGH: what the rules call a step that rewrites the layers),
    down to `min_factor`. Such a step is taken again at the lower lr (its change scaled, which for an optimizer whose
    step is linear in the lr, `LINEAR_IN_LR`, is the step at that lr; others keep it and step lower from the next
    one), and every later step runs at it. The fix tests "the steps are too large": a run whose steps at x0.1 are
    still above a healthy run's largest (Adam at an SGD lr 50x its own) tests nothing. Where the first step at x0.1
    is already within it, the run is the plain x0.1 unless a later early step rewrites the model."""

    name = "lr_down"
    tests = ("learning_rate_too_high",)
    changes = ("every param group's learning rate x 0.1 at every step (on top of the script's schedule), lower where "
               "the first step still moves the model by more than 1e-2 of its norm (to that) or an early step by more "
               "than 0.1")
    defaults = {"factor": 0.1, "target_ratio": HEALTHY_PEAK_RATIO, "guard": UPDATE_RATIO_HIGH, "guard_steps": 20,
                "min_factor": 1e-4}

    def setup(self, watch: Any) -> None:
        super().setup(watch)
        self._factor = float(self.params["factor"])
        self._before: list[Any] | None = None
        self._linear = type(require_optimizer(watch, self.name)).__name__ in LINEAR_IN_LR

    def factor(self, i: int, lr: float) -> float:
        return self._factor

    def before_step(self, optimizer: Any) -> None:
        guarding = self._steps < int(self.params["guard_steps"]) and self._factor > float(self.params["min_factor"])
        self._before = [p.detach().clone() for g in optimizer.param_groups for p in g["params"]] if guarding else None
        super().before_step(optimizer)

    def after_step(self, optimizer: Any) -> None:
        step, before, self._before = self._steps + 1, self._before, None
        super().after_step(optimizer)
        if before is None:
            return
        params = [p.detach() for g in optimizer.param_groups for p in g["params"]]
        ratio = update_ratio(params, before)
        first, lo = self._factor, float(self.params["min_factor"])
        limit = float(self.params["target_ratio"] if step == 1 else self.params["guard"])
        if math.isfinite(ratio) and ratio > limit and self._factor > lo:
            # the first step to the healthy peak; a later one by 10x at a time while it rewrites the model
            scale = max(limit / ratio if step == 1 else 0.1, lo / self._factor)
            while True:
                self._factor *= scale
                if self._linear:
                    with torch.no_grad():
                        for p, b in zip(params, before):
                            p.copy_(b + (p - b) * scale)
                    ratio *= scale
                if not self._linear or not ratio > limit * (1 + 1e-6) or self._factor <= lo:
                    break
                scale = max(0.1, lo / self._factor)
        if self._factor != first:
            redo = (f"taken again at x{self._factor:.3g} ({ratio:.2g} of the norm)" if self._linear
                    else f"kept ({type(optimizer).__name__}'s step is not linear in the lr)")
            self.did.append(f"optimizer step {step} at x{first:.3g} moved the model by more than {limit:g} of its "
                            f"norm: {redo}; x{self._factor:.3g} from then on")


class LrUp(_AroundStep):
    """x `factor`; by default ("auto") the factor is measured on the run's first optimizer step, taken at the
    user's lr: the one that brings that step's update/weight ratio (whole model) to 1e-2, where healthy runs
    peak (Adam's first steps are sign-like and are the run's peak; `diagnose.core.rules.gradients`, beside
    UPDATE_RATIO_HIGH), at least x10 and at most x1e4. A learning rate 10^4 too low is tested as such, not
    by a x10 that leaves it 10^3 too low."""

    name = "lr_up"
    tests = ("learning_rate_too_low",)
    changes = ("every param group's lr scaled up at every step (on top of the schedule): by the factor that brings "
               "the first step's update/weight ratio to 1e-2 (a healthy peak), at least x10")
    defaults = {"factor": "auto", "target_ratio": HEALTHY_PEAK_RATIO, "min_factor": 10.0, "max_factor": 1e4}

    def setup(self, watch: Any) -> None:
        super().setup(watch)
        self._factor: float | None = None if self.params["factor"] == "auto" else float(self.params["factor"])
        self._before: list[Any] | None = None

    def factor(self, i: int, lr: float) -> float:
        return self._factor if self._factor is not None else 1.0  # the first step measures, at the user's lr

    def before_step(self, optimizer: Any) -> None:
        if self._factor is None:
            self._before = [p.detach().clone() for g in optimizer.param_groups for p in g["params"]]
        super().before_step(optimizer)

    def after_step(self, optimizer: Any) -> None:
        super().after_step(optimizer)
        if self._factor is None and self._before is not None:
            ratio = update_ratio([p.detach() for g in optimizer.param_groups for p in g["params"]], self._before)
            lo, hi = float(self.params["min_factor"]), float(self.params["max_factor"])
            wanted = float(self.params["target_ratio"]) / ratio if ratio > 0 else hi
            self._factor = min(hi, max(lo, wanted)) if wanted == wanted else lo
            self._before = None
            self.did[:] = [f"lr x {self._factor:.3g} from step 2 (step 1 at the script's lr moved the weights by "
                           f"{ratio:.2g} of their norm; target {self.params['target_ratio']:g})"]

    def text(self, optimizer: Any) -> str:
        return "step 1 at the script's lr, to measure the update ratio"


class Warmup(_AroundStep):
    name = "warmup"
    tests = ("learning_rate_too_high",)
    changes = "a linear warm-up of every param group's lr over the first optimizer steps, on top of the schedule"
    defaults = {"steps": 20}

    def factor(self, i: int, lr: float) -> float:
        return min(1.0, (self._steps + 1) / max(1, int(self.params["steps"])))


class HoldLr(_AroundStep):
    name = "hold_lr"
    tests = ("lr_schedule",)
    changes = "each param group steps at its starting lr (initial_lr) whatever the schedule says"

    def setup(self, watch: Any) -> None:
        super().setup(watch)
        if not any(float(lr) > 0 for lr in self._start):
            raise NotApplicable("hold_lr: every param group starts at lr 0 (no starting lr to hold)")

    def new_lr(self, i: int, lr: Any) -> Any:
        return self._start[i] if i < len(self._start) else lr
