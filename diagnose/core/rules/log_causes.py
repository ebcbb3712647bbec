"""Causes a training log shows by itself (`diagnose logs`): a logged learning rate far above what one
optimizer step tolerates, a schedule that took the learning rate away before the model learned, and a
logged logit scale at its clamp or fallen toward 1. Each finding quotes the logged value with its step.

What a log cannot show (gradients, activations, the pairing of the data) is not guessed at here: when no
finding names a cause, `diagnose.core.logs.diagnosis` says that the log cannot tell the causes apart and
names the commands that can.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..definitions import end_start
from ..findings import Finding
from .base import Emit, RunContext
from .gradients import UPDATE_RATIO_HIGH
from .log_recall import recall_findings
from .logs import LogRule, _at_chance, _flat, _nonfinite, _series
from .loss import LOW_LOGIT_SCALE, TEMPERATURE_OFF_FACTOR, temperature_findings
from .optimizer import LR_GONE

# --- a learning rate too high for the optimizer -------------------------------------------------------
# Mechanism (the same as `update_ratio_high`, read from the lr instead of the weights): an Adam-family
# step moves every element by about lr while the gradient signs are consistent (m / sqrt(v) ~ ±1, the
# first steps of every run), and a weight matrix at PyTorch's default init (kaiming_uniform, a = sqrt 5)
# has rms 1 / sqrt(3 fan_in). One step then changes a layer by lr x sqrt(3 fan_in) of its scale. A log
# does not hold the widths: the ratio is smallest for the narrowest layer, so the bound is taken at
# MIN_FAN_IN = 16, narrower than any embedding or projection of a vision-text model (CLIP's narrowest is
# 512, the tests' towers 24-64). Above LR_HIGH one step moves every layer at least 16 wide by more than
# UPDATE_RATIO_HIGH (10%) of its initial scale: 100x the healthy 1e-3 per step. A wider layer only makes
# it worse, so the bound errs toward silence.
MIN_FAN_IN = 16
LR_HIGH = UPDATE_RATIO_HIGH / math.sqrt(3 * MIN_FAN_IN)  # 0.0144
# A schedule whose first logged lr is already at least this share of its peak has no warm-up ramp before
# that step (a linear warm-up starts at 0 or lr / warmup_steps).
WARMUP_FLOOR = 0.5


def failure(run: str, df: pd.DataFrame, ctx: RunContext) -> Finding | None:
    """The log rules' own evidence that the run failed (non-finite, at ln N, rising or flat, random recall)."""
    for found in (_nonfinite(run, df), _at_chance(run, df, ctx.batch_size), _flat(run, df),
                  recall_findings(run, df)):
        if found:
            return found[0]
    return None


def _failed(fail: Finding | None) -> str:
    return f" The log shows the run failing: {fail.id}." if fail else ""


def _lr(df: pd.DataFrame) -> pd.Series:
    lr = _series(df, "lr")
    return lr[np.isfinite(lr)]


class LogLearningRateHigh(LogRule):
    """A logged learning rate above LR_HIGH: one Adam step moves every layer by over 10% of its scale.

    Mechanism: an Adam step moves each element by ~lr while gradient signs agree, and a layer at PyTorch's
    default init has rms 1/sqrt(3 fan_in), so one step changes it by lr sqrt(3 fan_in) of its scale;
    LR_HIGH = UPDATE_RATIO_HIGH / sqrt(3 MIN_FAN_IN) is where that passes UPDATE_RATIO_HIGH for every layer
    at least MIN_FAN_IN wide. A cause (warning) only when the log also shows the run failing; info when
    the run learned anyway. Assumes an Adam-family optimizer (SGD's step depends on the gradient)."""

    emits = (Emit("learning_rate_high", ("info", "warning"), "learning_rate_too_high", 2),)
    thresholds = {"LR_HIGH": LR_HIGH, "MIN_FAN_IN": MIN_FAN_IN, "UPDATE_RATIO_HIGH": UPDATE_RATIO_HIGH,
                  "WARMUP_FLOOR": WARMUP_FLOOR}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        lr = _lr(df)
        if lr.empty or float(lr.max()) < LR_HIGH:
            return []
        peak, peak_step = float(lr.max()), int(lr.idxmax())
        first, first_step = float(lr.iloc[0]), int(lr.index[0])
        fail = failure(ctx.name, df, ctx)
        ev = {"lr_peak": peak, "peak_step": peak_step, "lr_first": first, "first_step": first_step,
              "lr_last": float(lr.iloc[-1]), "last_step": int(lr.index[-1]), "threshold": round(LR_HIGH, 5),
              "update_to_param_at_fan_in_16": round(peak * math.sqrt(3 * MIN_FAN_IN), 3),
              "assumes": "an Adam-family optimizer (SGD's step is lr x gradient, which a log does not hold)",
              "run_failed": fail.id if fail else None}
        warm = ""
        if first >= WARMUP_FLOOR * peak:
            ev["warmup"] = "absent before the first logged step"
            warm = (f" No warm-up before step {first_step}: the first logged lr ({first:.3g}) is already "
                    f"{first / peak:.0%} of the peak, so Adam's first full-size steps hit the initial weights.")
        msg = (f"{ctx.name}: the logged learning rate reaches {peak:.3g} at step {peak_step}, {peak / LR_HIGH:.1f}x "
               f"the {LR_HIGH:.3g} above which one Adam step moves every layer {MIN_FAN_IN} or more wide by over "
               f"{UPDATE_RATIO_HIGH:.0%} of its initial scale ({ev['update_to_param_at_fan_in_16']:.2g} of it for a "
               f"{MIN_FAN_IN}-wide layer): single steps rewrite the layers.{warm}{_failed(fail)}")
        return [Finding("learning_rate_high", "warning" if fail else "info", ctx.name, msg, ev,
                        "Lower the lr 10x (Adam: 1e-4 to 1e-3 for alignment heads) or add a warm-up; "
                        "`diagnose.watch` measures the update/param ratio per layer.", "lr")]


class LogLearningRateGone(LogRule):
    """The logged lr at most LR_GONE of its peak over the end of the run while the loss did not learn.

    Mechanism (as `LearningRateGone` on the records): at 1% of its peak lr, Adam's steps are 100x smaller
    than the ones the run was set up with; a loss still at ln N or flat then cannot move. A cosine or
    linear decay that reaches 0 only at the last step keeps over 1% of its peak over the end window."""

    emits = (Emit("lr_schedule_gone", ("error",), "lr_schedule", 1),)
    thresholds = {"LR_GONE": LR_GONE}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        # the record rule's condition (diagnose.core.rules.optimizer.LearningRateGone), read from the log
        lr = _lr(df)
        if len(lr) < 2 or float(lr.max()) <= 0:
            return []
        peak, peak_step = float(lr.max()), int(lr.idxmax())
        end = lr.iloc[end_start(list(lr.index)):]
        if float(end.iloc[-1]) > float(end.iloc[0]) or float(end.max()) > LR_GONE * peak:
            return []  # rising (a warm-up on its way up), or still a usable share of the peak
        fail = next((f for f in (_at_chance(ctx.name, df, ctx.batch_size) or _flat(ctx.name, df))), None)
        if fail is None:
            return []  # a schedule that ends at zero after the run learned is the schedule working
        after = lr[lr.index > peak_step]
        gone = int(after[after <= LR_GONE * peak].index[0])
        ev = {"lr_peak": peak, "peak_step": peak_step, "lr_end_max": float(end.max()),
              "end_steps": [int(end.index[0]), int(end.index[-1])], "gone_from_step": gone,
              "threshold_share_of_peak": LR_GONE, "run_failed": fail.id}
        return [Finding(
            "lr_schedule_gone", "error", ctx.name,
            f"{ctx.name}: the logged learning rate fell from {peak:.3g} (step {peak_step}) to at most "
            f"{float(end.max()):.3g} over steps {ev['end_steps'][0]}-{ev['end_steps'][1]} (under {LR_GONE:g} of "
            f"its peak from step {gone}) while the loss did not learn ({fail.id}): the schedule took the lr away "
            "before the model learned.", ev,
            "Check the scheduler's length (total steps vs epochs, steps per epoch, gradient accumulation) and that "
            "scheduler.step() is called once per optimizer step.", "lr")]


class LogTemperature(LogRule):
    """The logged logit scale exp(t): at its clamp, or fallen toward 1 from where it started.

    Mechanism (as `Temperature` on the records): under LOW_LOGIT_SCALE, logits of unit vectors span at most
    ±scale and even a perfect ranking keeps most of ln N. Only a scale that fell by TEMPERATURE_OFF_FACTOR
    counts: a constant logged value near 2.66 is also a log of the raw parameter t = ln(1/0.07)."""

    emits = (Emit("temperature_at_clamp", ("warning",), "temperature", 3),
             Emit("temperature_toward_1", ("warning",), "temperature", 2))
    thresholds = {"LOW_LOGIT_SCALE": LOW_LOGIT_SCALE, "TEMPERATURE_OFF_FACTOR": TEMPERATURE_OFF_FACTOR}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        s = _series(df, "logit_scale")
        s = s[np.isfinite(s)]
        if s.empty:
            return []
        first, last = float(s.iloc[0]), float(s.iloc[-1])
        ev = {"logit_scale_first": round(first, 3), "first_step": int(s.index[0]), "last_step": int(s.index[-1]),
              "steps": [int(s.index[0]), int(s.index[-1])]}
        found = temperature_findings(ctx.name, last, ctx.max_logit_scale, ev, f"the logged logit scale at step "
                                                                              f"{int(s.index[-1])}", "logit_scale")
        # A constant logged value near 2.66 is also what a log of the raw parameter t = ln(1/0.07) looks
        # like (the name does not say which): only a scale that fell by TEMPERATURE_OFF_FACTOR during the
        # run is evidence that training drove the temperature soft.
        return [f for f in found
                if f.id != "temperature_toward_1" or (last > 0 and first / last >= TEMPERATURE_OFF_FACTOR)]
