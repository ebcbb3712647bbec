"""The script writes the parameters outside `optimizer.step()` (probe ``gradient_flow.model``: the weights at an
observation against the weights the optimizer's last measured step left, ``outside_to_update``)."""

from __future__ import annotations

import math

import pandas as pd

from ..definitions import learned
from ..findings import Finding
from .base import Emit, Rule, RunContext, end_loss, finite, primary_component, rnd, series, span
from .persistence import PERSIST_MIN_OBS, loss_falling

# A write at least as long as the optimizer's own step moved the weights: the script, not the optimizer, decides
# where they are (a clamp of a logit scale or a renorm of a few rows is a small fraction of the model's step).
OUTSIDE_REL = 1.0
# Twice: one write is a reload or a deliberate reset; a second is the script's habit.
OUTSIDE_MIN_OBS = 2
# outside_shrink = Σ(‖θ_after‖ − ‖θ_now‖) / Σ‖write‖: exactly 1 where every tensor the write touched was only
# scaled down (p.mul_(1 − wd)); a write in any other direction spends some of its length sideways.
SHRINK_SHARE = 0.9
# The loss at the writes' observations rose over the one before by this many standard errors of the other
# steps' changes: the write took the model back to where it computed a worse loss.
JUMP_SE = 2.0


class ParamsWrittenOutside(Rule):
    """Something other than the optimizer moves the weights at least as far as its step does, again and again."""

    topic = "optimizer"
    emits = (Emit("decay_written_outside", ("warning", "error"), "weight_decay_collapse", 1),
             Emit("steps_undone_outside", ("warning", "error"), "learning_rate_too_low", 1))
    needs = (("gradient_flow.model", "outside_to_update"),)
    thresholds = {"OUTSIDE_REL": OUTSIDE_REL, "OUTSIDE_MIN_OBS": OUTSIDE_MIN_OBS, "SHRINK_SHARE": SHRINK_SHARE,
                  "JUMP_SE": JUMP_SE}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        writes = _writes(df)
        if len(writes) < OUTSIDE_MIN_OBS:
            return []
        shrink = finite(series(df, "gradient_flow.model", "model", "outside_shrink")).reindex(writes.index)
        decay = float(shrink.median()) >= SHRINK_SHARE
        jump, se = _loss_jump(df, writes.index)
        undone = jump is not None and jump > JUMP_SE * se
        mean, ln_b = end_loss(df)
        severity = "error" if (decay or undone) and not learned(mean, ln_b) else "warning"
        named = df[(df["probe"] == "gradient_flow") & (df["metric"] == "outside_to_param")
                   & df["step"].isin(writes.index)].groupby("target")["value"].max().sort_values(ascending=False)
        ev = {"writes": len(writes), "steps": span(writes), "write_steps": [int(s) for s in writes.index[:10]],
              "outside_to_update_median": rnd(float(writes.median())), "outside_shrink_median": rnd(float(
                  shrink.median())), "loss_jump_at_writes": rnd(jump) if jump is not None else None,
              "loss_jump_se": rnd(se) if jump is not None else None,
              "parameters": {k: rnd(v) for k, v in named.head(5).items()}, "loss_end": rnd(mean),
              "chance_ln_B": rnd(ln_b)}
        where = ", ".join(named.index[:3]) or "the model"
        target = str(named.index[0]) if len(named) else "model"
        head = (f"Between the optimizer's step and the next observation the weights were written by something else "
                f"{len(writes)} time(s) (steps {', '.join(str(int(s)) for s in writes.index[:6])}"
                f"{' ...' if len(writes) > 6 else ''}), each {float(writes.median()):.3g}x as far as the step itself "
                f"moved them (median), largest on {where}")
        if decay:
            text = (f"{head}; the writes only scaled the tensors down (shrink share {float(shrink.median()):.2f} of "
                    "their length): a decay the script applies outside the optimizer pulls the weights towards zero "
                    "further at each step than the optimizer's step moves them (a hand-written rate not multiplied "
                    "by the learning rate, or applied more often than meant).")
            return [Finding("decay_written_outside", severity, ctx.name, text, ev,
                            "Move the decay into the optimizer (AdamW's weight_decay) or multiply the hand-written "
                            "rate by the learning rate.", target)]
        moved = (f"the loss at those observations was {jump:+.3g} above the step before (other steps' changes: "
                 f"standard error {se:.2g}): each write takes the model back" if undone else
                 "the loss shows no jump at the writes")
        text = (f"{head}, not a decay (shrink share {float(shrink.median()):.2f}); {moved}. Net of the writes the "
                "weights keep a fraction of what the optimizer's steps give them, as if the learning rate were that "
                "much lower (an EMA or a checkpoint copied into the live weights and never restored, a reload, a "
                "reset).")
        return [Finding("steps_undone_outside", severity, ctx.name, text, ev,
                        "Leave the parameters the optimizer trains to the optimizer: restore them after copying an "
                        "average or a checkpoint into the model (EMA store/copy_to/restore), or write the copy to "
                        "another model.", target)]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        """A decay, or writes that sent the loss back up, and since the first write PERSIST_MIN_OBS observations
        over which the loss did not fall (a decay that a healthy run's gradients outgrow is not an alarm)."""
        if finding.severity != "error":
            return False
        since = int(_writes(df).index[0])
        loss = series(df, "loss_split", primary_component(df), "value")
        return int((loss.index >= since).sum()) >= PERSIST_MIN_OBS and not loss_falling(df, since)


def _writes(df: pd.DataFrame) -> pd.Series:
    """The readings of outside_to_update at or above OUTSIDE_REL (NaN, an update that was NaN, left out)."""
    ratio = finite(series(df, "gradient_flow.model", "model", "outside_to_update"))
    return ratio[ratio >= OUTSIDE_REL]


def _loss_jump(df: pd.DataFrame, steps: pd.Index) -> tuple[float | None, float]:
    """Mean rise of the primary loss from the observation before each write's to the write's, and the standard
    error of that mean from the other consecutive observations' changes (None where too few of either)."""
    loss = finite(series(df, "loss_split", primary_component(df), "value"))
    diff = loss.diff().dropna()
    at = diff[diff.index.isin(steps)]
    rest = diff[~diff.index.isin(steps)]
    if len(at) < OUTSIDE_MIN_OBS or len(rest) < 3:
        return None, math.nan
    return float(at.mean()), float(rest.std()) / math.sqrt(len(at))
