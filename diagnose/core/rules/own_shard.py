"""Features gathered from the ranks where only this rank's shard carries a gradient, under a step that does not
normalise the gradient's scale (probe ``contrastive``: gather_shards, gather_shards_with_grad; probe ``optimizer``:
eps rows exist only for optimizers that divide by a second moment)."""

from __future__ import annotations

import pandas as pd

from ..definitions import learned
from ..findings import Finding
from .base import Emit, Rule, RunContext, end_loss, finite, rnd, select, series, span
from .persistence import PERSIST_MIN_OBS


class OwnShardGradient(Rule):
    """Every rank scores the global B*W x B*W logits, but its loss reaches the model only through its own B rows
    (the usual `all_gather`, own shard put back): the sum over ranks is the global loss's gradient, and DDP's
    average divides it by W. Adam-type steps divide the scale out (open_clip trains so); SGD moves the weights
    W times less than the global loss asks: the learning rate divided by the world size."""

    topic = "distributed"
    emits = (Emit("gathered_own_shard_only", ("error",), "distributed_gradient_scale", 2),)
    needs = (("contrastive", "gather_shards"), ("contrastive", "gather_shards_with_grad"))
    thresholds = {"PERSIST_MIN_OBS": PERSIST_MIN_OBS}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        held = _own_shard(df, ctx)
        if held is None:
            return []
        mean, ln_b = end_loss(df)
        if learned(mean, ln_b) or len(select(df, "optimizer", "eps")):  # Adam-type steps divide the scale out
            return []
        k, steps = held
        up = finite(series(df, "gradient_flow.model", "model", "update_to_param"))
        ev = {"shards": k, "rows_per_shard": ctx.batch_size, "candidates": ctx.candidates, "readings": len(steps),
              "steps": span(steps), "update_to_param_median": rnd(float(up.median()), 8) if len(up) else None,
              "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b)}
        return [Finding(
            "gathered_own_shard_only", "error", ctx.name,
            f"the embeddings the loss scores are {k} shards of {ctx.batch_size} rows joined by torch.cat, and only one "
            f"of them carries a gradient back to the model at each of {len(steps)} readings: the loss over all "
            f"{ctx.candidates} candidates reaches the weights through this rank's own rows alone. Under DDP, which "
            f"averages the {k} ranks' gradients, each weight gets 1/{k} of the global loss's gradient, and the "
            "optimizer takes it as it comes (no second moment divides the scale out, as Adam's would): the "
            f"learning rate divided by {k} (median update/param {ev['update_to_param_median']}).", ev,
            f"Multiply each rank's loss by the world size ({k}) before backward, or gather with "
            "torch.distributed.nn.all_gather (every shard differentiable) and average; or raise the lr by the "
            "world size.", "embeddings")]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        """Never during the run: a script that multiplies its loss by the world size before backward (the fix) gives
        the same readings, and it too is above chance for its first few dozen steps (measured on test31's case: its
        loss reaches ln(B) at step ~20 and reads as falling from step ~39). Only the run's end, not learned under a
        step that keeps the gradient's scale, makes the divided gradient the likely cause."""
        return False


def _own_shard(df: pd.DataFrame, ctx: RunContext) -> tuple[int, pd.Series] | None:
    """(k, the steps read) where an embedding came as k = candidates / batch shards with one carrying a gradient at
    every reading (at least PERSIST_MIN_OBS), the logits square over all candidates (every rank's global loss)."""
    b, n = ctx.batch_size, ctx.candidates
    if not (b and n and n % b == 0 and n >= 2 * b):
        return None
    rows = finite(series(df, "contrastive", "logits", "rows"))
    if rows.empty or float(rows.iloc[-1]) != n:
        return None
    for name in ("image", "text"):
        k = finite(series(df, "contrastive", name, "gather_shards"))
        g = finite(series(df, "contrastive", name, "gather_shards_with_grad")).reindex(k.index)
        if len(k) >= PERSIST_MIN_OBS and bool((k == n // b).all()) and bool((g == 1).all()):
            return n // b, k
    return None
