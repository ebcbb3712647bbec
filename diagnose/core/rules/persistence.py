"""When a condition that is normal early in a run becomes an alarm: it has persisted and the run is not
getting better.

Contrastive training often contracts first and spreads later (embeddings that crowd together over
the first steps, a loss that sits at ln(B) before it falls): that phase is normal. An alarm on such a
condition therefore needs two things measured on the records so far, not a step count:
- persistence: the condition held at every observation since some step s (at least PERSIST_MIN_OBS of
  them), and either since s the optimizer has moved the weights by at least their own norm
  (update/param summed over the steps, `gradients.SETTLED_CUMULATIVE_UPDATE`): the model had every
  opportunity to leave the state; or the run as a whole has moved that much and the state has lasted
  half of it: a collapse whose gradients vanished moves nothing any more, and that is how it stays;
  a stall (update/param falling to a fraction of its peak while the state holds) was tried as a third
  way and dropped: a healthy open_clip run sat at chance with its updates 9x below their first step
  for 25 steps before it learned, while stuck runs showed 8-40x;
- no improvement over that span: the primary loss did not fall (its last third is not below its first
  third by more than twice the standard error of the difference; values above ln(B) count as ln(B):
  coming down to chance is not matching pairs), and whatever the rule watches (an effective rank, say)
  did not recover.
A run whose condition comes and goes never builds the span; a run still getting better never alarms.
"""

from __future__ import annotations

import math

import pandas as pd

from .base import finite, primary_component, series
from .gradients import SETTLED_CUMULATIVE_UPDATE, cumulative_update

# Two standard errors: a fall that large in the mean of a noisy loss is not step-to-step noise
# (one-sided, ~2% chance under no change).
IMPROVEMENT_SE = 2.0
# "Not getting better" compares the first and last thirds of the span, each of at least 2 observations
# (a standard error needs two): a span of fewer than 6 observations cannot show it, so it cannot alarm.
PERSIST_MIN_OBS = 6


def held_since(holds: pd.Series) -> int | None:
    """First step of the trailing run of True in a step-indexed boolean series; None if the last is False."""
    if holds.empty or not bool(holds.iloc[-1]):
        return None
    false_steps = holds.index[~holds.values.astype(bool)]
    after = holds.index[holds.index > false_steps[-1]] if len(false_steps) else holds.index
    return int(after[0])


def moved_since(df: pd.DataFrame, since: int) -> bool:
    """The optimizer moved the weights by their own norm (summed update/param) since `since`."""
    return cumulative_update(df[df["step"] >= since]) >= SETTLED_CUMULATIVE_UPDATE


def falling(values: pd.Series, ceiling: float | None = None) -> bool:
    """The last third of `values` is below its first third (counted at most `ceiling`) by more than
    IMPROVEMENT_SE standard errors. The ceiling caps the mean, not each value: clipping values would cut
    only the upper half of a noisy level and make a flat series look like a fall."""
    v = finite(values)
    n = len(v) // 3
    if n < 2:
        return False
    first, last = v.iloc[:n], v.iloc[-n:]
    se = math.sqrt(float(first.var()) / n + float(last.var()) / n)
    start = float(first.mean()) if ceiling is None else min(float(first.mean()), ceiling)
    return start - float(last.mean()) > IMPROVEMENT_SE * se


def loss_falling(df: pd.DataFrame, since: int) -> bool:
    """The primary loss fell over the span since `since`, counted from ln(B) down: a loss that comes down
    from above chance to chance (random init's confident wrong logits unlearned) has not got better at
    matching pairs; the values are clipped at the chance level first when it is recorded."""
    comp = primary_component(df)
    values = series(df, "loss_split", comp, "value")
    chance = finite(series(df, "loss_split", comp, "chance"))
    return falling(values[values.index >= since], ceiling=float(chance.iloc[-1]) if len(chance) else None)


def gap_to_chance(df: pd.DataFrame, component: str) -> pd.Series:
    """(loss - ln B) / ln B of `component` at each observed step."""
    values, chance = series(df, "loss_split", component, "value"), series(df, "loss_split", component, "chance")
    return values / chance.reindex(values.index).ffill() - 1.0


def persisted(df: pd.DataFrame, holds: pd.Series, since: int) -> bool:
    """The state held over >= PERSIST_MIN_OBS observations and, since it began, the weights moved by their
    norm; or the whole run moved that much and the state covers at least half of it."""
    if int((holds.index >= since).sum()) < PERSIST_MIN_OBS:
        return False
    first, last = int(holds.index[0]), int(holds.index[-1])
    return moved_since(df, since) or (moved_since(df, first) and last - since + 1 >= 0.5 * (last - first + 1))


def stuck(df: pd.DataFrame, holds: pd.Series) -> bool:
    """`holds` (per observed step) persisted (see `persisted`) and the loss did not fall over that span."""
    since = held_since(holds)
    return since is not None and persisted(df, holds, since) and not loss_falling(df, since)
