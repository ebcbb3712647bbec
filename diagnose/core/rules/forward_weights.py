"""The forward computes with weights other than the parameters the optimizer steps (probe ``forward_weights``: a
layer's output against its input through its current weight, recomputed on the step's own tensors)."""

from __future__ import annotations

import pandas as pd

from ..definitions import learned
from ..findings import Finding
from .base import Emit, Rule, RunContext, end_loss, finite, rnd, series, span

# The recomputation is the forward's own operation on the same input and the current parameters, in the output's
# dtype: 0 where the forward used them (the same kernel on the same tensors; ~1e-6 where another kernel sums in
# another order), and 2^-8 (bfloat16's precision) is the most a cast of the same weights could differ by. A fiftieth
# of the output is five times that: the forward used other weights.
STALE_REL = 0.02
# A stale copy's distance from the parameters only grows while the optimizer moves them: three readings in a row
# above STALE_REL, the last not below the first, are copies being left behind step after step, not one odd forward.
STALE_MIN_OBS = 3


class StaleForwardWeights(Rule):
    """A layer's output is not its input through its current weight: the forward reads a copy taken earlier."""

    topic = "optimizer"
    emits = (Emit("forward_weights_stale", ("warning", "error"), "param_not_in_optimizer", 1),)
    needs = (("forward_weights", "stale_output"),)
    thresholds = {"STALE_REL": STALE_REL, "STALE_MIN_OBS": STALE_MIN_OBS}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        stale = _stale(df)
        if not _held(stale):
            return []
        layers = df[(df["probe"] == "forward_weights") & (df["metric"] == "stale_output")]
        last = layers[layers["step"] == layers["step"].max()].set_index("target")["value"]
        at_step = finite(series(df, "forward_weights", "model", "autocast_at_step"))
        autocast = bool(len(at_step)) and float(at_step.mean()) >= 0.5
        mean, ln_b = end_loss(df)
        severity = "warning" if learned(mean, ln_b) else "error"
        first = int(stale.index[(stale >= STALE_REL).values][0])
        ev = {"stale_output_end": rnd(float(stale.iloc[-1])), "stale_output_first": rnd(float(stale.iloc[0])),
              "first_step_above": first, "layers": {k: rnd(v) for k, v in last.items()},
              "autocast_open_at_optimizer_step": rnd(float(at_step.mean())) if len(at_step) else None,
              "steps": span(stale), "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b)}
        why = ("an autocast region was open at the optimizer's steps: inside one region the first use of a weight "
               "caches its low-precision cast and every later forward in the region reuses it, so the optimizer "
               "moves the fp32 parameters while the forward keeps computing with the casts of the weights the "
               "region first saw, and the loss is computed from weights that never change" if autocast else
               "the forward reads a copy of the weights made before the optimizer moved them (a transposed or cast "
               "weight kept from an earlier step, a replica not synced back)")
        fix = ("Open torch.autocast around the forward and the loss only and exit it before optimizer.step() (or call "
               "torch.clear_autocast_cache() after each step)." if autocast else
               "Compute from the module's parameters at every forward instead of a copy kept across steps.")
        return [Finding(
            "forward_weights_stale", severity, ctx.name,
            f"The forward computes with weights the optimizer does not step: {', '.join(last.index[:2])} gave outputs "
            f"{float(stale.iloc[-1]):.1%} away from their input through the layer's current weight at step "
            f"{int(stale.index[-1])} (from step {first} on, {float(stale.iloc[0]):.1%} at step {int(stale.index[0])}), "
            f"growing as the updates accumulate: {why}.", ev,
            fix, "model")]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        return _held(_stale(df))  # no phase of healthy training gives it (STALE_MIN_OBS readings, growing)


def _stale(df: pd.DataFrame) -> pd.Series:
    """Per expensive step: the largest relative difference over the layers read."""
    rows = df[(df["probe"] == "forward_weights") & (df["metric"] == "stale_output")]
    return finite(rows.groupby("step")["value"].max())


def _held(stale: pd.Series) -> bool:
    """The last STALE_MIN_OBS readings above STALE_REL, the last of them not below the first."""
    tail = stale.iloc[-STALE_MIN_OBS:]
    return (len(tail) == STALE_MIN_OBS and bool((tail >= STALE_REL).all())
            and float(tail.iloc[-1]) >= float(tail.iloc[0]))
