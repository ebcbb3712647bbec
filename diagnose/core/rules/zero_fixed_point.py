"""Trainable tensors that are exactly zero and get exactly-zero gradients at every measured step: a fixed point of
gradient descent (probe ``gradient_flow``: per parameter param_norm and zero_grad_frac)."""

from __future__ import annotations

import pandas as pd

from ..definitions import learned
from ..findings import Finding
from .base import Emit, Rule, RunContext, end_loss, rnd, select, span
from .persistence import PERSIST_MIN_OBS, loss_falling


class ZeroFixedPoint(Rule):
    """A tensor of zeros whose gradient is exactly zero stays zero whatever the optimizer: a product of factors that
    all start at zero (both LoRA factors, a gate and the branch it gates), where each factor's gradient is the other's
    value times the upstream gradient. Weight decay keeps zero at zero; Adam's update of a zero gradient is zero."""

    topic = "gradients"
    emits = (Emit("zero_fixed_point", ("warning", "error"), "no_gradient_path", 1),)
    needs = (("gradient_flow", "zero_grad_frac"), ("gradient_flow", "param_norm"))
    thresholds = {"PERSIST_MIN_OBS": PERSIST_MIN_OBS}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        stuck, steps = _stuck(df)
        if not stuck:
            return []
        mean, ln_b = end_loss(df)
        severity = "warning" if learned(mean, ln_b) else "error"
        ev = {"parameters": stuck[:12], "count": len(stuck), "readings": len(steps), "steps": span(steps.to_series()),
              "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b)}
        return [Finding(
            "zero_fixed_point", severity, ctx.name,
            f"{len(stuck)} trainable tensor(s) are exactly zero and received exactly-zero gradients at each of "
            f"{len(steps)} measured steps ({', '.join(stuck[:4])}{' ...' if len(stuck) > 4 else ''}): zero is a fixed "
            "point of gradient descent for them. A product of factors that all start at zero (both low-rank factors "
            "of a LoRA/DoRA update, a gate and the branch it gates) gives each factor the other's value, zero, as its "
            "gradient, so none of them ever moves and the path they form carries nothing to the loss.", ev,
            "Initialise one factor randomly and the other at zero (LoRA: A ~ N(0, 1/r), B = 0): the product still "
            "starts at zero, its gradient does not.", stuck[0])]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        """An error whose readings span PERSIST_MIN_OBS observations over which the loss did not fall."""
        if finding.severity != "error":
            return False
        _, steps = _stuck(df)
        return len(steps) >= PERSIST_MIN_OBS and not loss_falling(df, int(steps[0]))


def _stuck(df: pd.DataFrame) -> tuple[list[str], pd.Index]:
    """Parameters whose every reading (at least PERSIST_MIN_OBS) has param_norm 0 and zero_grad_frac 1, and the
    steps read."""
    zero = select(df, "gradient_flow", "zero_grad_frac")
    if zero.empty:
        return [], pd.Index([])
    norm = select(df, "gradient_flow", "param_norm")
    z = zero.pivot_table(index="step", columns="target", values="value")
    n = norm.pivot_table(index="step", columns="target", values="value").reindex(index=z.index, columns=z.columns)
    held = ((z >= 1.0) & (n == 0.0)).sum()
    count = z.notna().sum()
    names = [t for t in z.columns if count[t] >= PERSIST_MIN_OBS and held[t] == count[t]]
    return sorted(names), z.index
