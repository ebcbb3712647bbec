"""The weights moved, summed over the whole run, by a small fraction of their norm, and the loss never left where it
started (probe ``gradient_flow.model``: update_to_param summed over the steps, as the persistence gate sums it)."""

from __future__ import annotations

import pandas as pd

from ..definitions import END_MIN_POINTS, learned
from ..findings import Finding
from .base import Emit, Rule, RunContext, end_loss, finite, rnd, series, span
from .gradients import UPDATE_RATIO_LOW, cumulative_updates
from .persistence import loss_falling

# The per-step threshold's own reading over a run: UPDATE_RATIO_LOW (1e-5 of the weights' norm per step, 100x below
# the rule of thumb) moves them by 1% in 1000 steps. A run whose steps, summed, stay under that 1% has not moved its
# weights far enough to change its outputs, whatever its largest step: a step size that grows from near zero (a
# warm-up of thousands of steps, Adafactor's relative step with warmup_init: 1e-6 x step) passes the per-step
# threshold after a few dozen steps while the run as a whole still moves nothing.
BARELY_MOVED = UPDATE_RATIO_LOW * 1000
# The steps are the gradient's: at least half of a typical step turns the weights (update_turn_to_param over
# update_to_param, median over the run). A gradient step in a space of many dimensions is nearly orthogonal to the
# weights (Adafactor's case: 0.9-1.0); a logit scale moving alone or a decay alone turns nothing (~0).
TURNING_SHARE = 0.5


class WeightsBarelyMoved(Rule):
    """Summed over the run, the optimizer moved the weights by under BARELY_MOVED of their norm, with gradients
    present, and the loss did not fall: the steps are too small for the run's length."""

    topic = "gradients"
    emits = (Emit("weights_barely_moved", ("error",), "learning_rate_too_low", 2),)
    needs = (("gradient_flow.model", "update_to_param"), ("gradient_flow.model", "grad_norm"))
    thresholds = {"BARELY_MOVED": BARELY_MOVED, "UPDATE_RATIO_LOW": UPDATE_RATIO_LOW, "TURNING_SHARE": TURNING_SHARE}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        up = finite(series(df, "gradient_flow.model", "model", "update_to_param"))
        grad = finite(series(df, "gradient_flow.model", "model", "grad_norm"))
        # fewer readings: too short a run to call; a peak under the per-step threshold is update_ratio_low's
        if len(up) < 2 * END_MIN_POINTS or float(up.max()) < UPDATE_RATIO_LOW or grad.empty or float(grad.min()) <= 0:
            return []
        # the steps turned the weights (a gradient's steps, too small): not a logit scale moving alone while the
        # tensors get no gradient (the gradient rules' finding), nor a decay alone
        turn = finite(series(df, "gradient_flow.model", "model", "update_turn_to_param")).reindex(up.index)
        if turn.isna().all() or float((turn / up).median()) < TURNING_SHARE:
            return []
        total = float(cumulative_updates(df).iloc[-1])
        mean, ln_b = end_loss(df)
        if total >= BARELY_MOVED or learned(mean, ln_b) or loss_falling(df, int(up.index[0])):
            return []
        last = up.iloc[-max(1, len(up) // 5):]
        rate = float(last.mean())
        ev = {"cumulative_update_to_param": rnd(total, 8), "threshold": BARELY_MOVED, "steps": span(up),
              "update_to_param_first": rnd(float(up.iloc[0]), 10), "update_to_param_end": rnd(rate, 10),
              "steps_to_move_1pct_at_end_rate": int(BARELY_MOVED / rate) if rate > 0 else None,
              "median_grad_norm": rnd(float(grad.median()), 6),
              "turning_share": rnd(float((turn / up).median()), 4), "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b),
              "lr": ctx.optimizer.get("lr")}
        return [Finding(
            "weights_barely_moved", "error", ctx.name,
            f"over steps {ev['steps'][0]}-{ev['steps'][1]} the optimizer moved the weights by {total:.2g} of their "
            f"norm in all (the sum of each step's update/param; under {BARELY_MOVED:g}) although gradients were "
            f"present (median norm {ev['median_grad_norm']:.3g}), and the loss did not fall (end {mean:.4f}, ln(B) "
            f"{ln_b:.4f}): the steps are too small for the run's length (update/param "
            f"{ev['update_to_param_first']:.2g} at the first step, {rate:.2g} at the end).", ev,
            "Raise the learning rate or shorten its warm-up (an optimizer that sizes its own steps, as Adafactor with "
            "relative_step=True, needs an explicit lr with relative_step=False); compare the loss against ln(B).")]

    def alarm(self, finding: Finding, records: pd.DataFrame) -> bool:
        """Never live: every run starts having moved nothing, and only its end says the run was too short for its
        steps (a run whose per-step update stays low alarms as update_ratio_low)."""
        return False
