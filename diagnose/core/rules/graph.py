"""Rules on the autograd graph of the observed tensors (probe ``graph_leaves``): trainable tensors on the loss's
path that belong to no registered module of the watched model and to no param group of the optimizer."""

from __future__ import annotations

import pandas as pd

from ..definitions import learned
from ..findings import Finding
from .base import Emit, Rule, RunContext, end_loss, finite, primary_component, rnd, select, series, span
from .optimizer import UNMOVED_REL  # a norm constant to float rounding is a tensor nothing steps
from .persistence import PERSIST_MIN_OBS, held_since, loss_falling, stuck

PROBE = "graph_leaves"
# Share of the trainable values on the loss's path that no optimizer can step: past half, most of what the loss
# trains cannot move whatever the run does, so the model's own movement (the persistence gate's usual measure of
# "had the chance to leave the state") cannot be waited for: the optimizer moves only the minority it holds.
UNSTEPPED_MAJORITY = 0.5
# Walks that found fresh unregistered leaves after the last walk's had been freed (probe reading `recreated`): two
# after the first are three generations, a creation at every forward (a layer built inside `forward`), not a part
# rebuilt once; no healthy run has trainable tensors that live one step.
RECREATED_MIN = 2


class ParamsUnregistered(Rule):
    """Leaves of the loss's graph that require grad, in neither `model.parameters()` nor any param group."""

    topic = "graph"
    emits = (Emit("params_unregistered", ("warning", "error"), "param_not_in_optimizer", 1),)
    needs = ((PROBE, "count"),)
    thresholds = {"UNMOVED_REL": UNMOVED_REL, "UNSTEPPED_MAJORITY": UNSTEPPED_MAJORITY, "RECREATED_MIN": RECREATED_MIN}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        n = finite(series(df, PROBE, "unregistered", "count"))
        if n.empty or float(n.iloc[-1]) <= 0:
            return []
        fresh = _recreated(df)
        change = None if fresh else _norm_change(df)  # across generations the norms are of other tensors
        if change is not None and change > UNMOVED_REL:
            return []  # something else steps them (a second optimizer, an EMA): not this fault
        listed = select(df, PROBE, "unregistered_numel")
        listed = listed[listed["step"] == int(n.index[-1])]
        shapes = [str(t).split(":", 1)[-1] for t in listed["target"]]
        numel = finite(series(df, PROBE, "unregistered", "numel"))
        mean, ln_b = end_loss(df)
        severity = "warning" if learned(mean, ln_b) else "error"
        count, values = int(n.iloc[-1]), int(numel.iloc[-1]) if len(numel) else None
        ev = {"count": count, "numel": values, "shapes": shapes, "found_at_step": int(n.index[-1]),
              "relative_norm_change": None if change is None else rnd(change, 9),
              "norm_steps": span(finite(series(df, PROBE, "unregistered", "norm"))),
              "share_of_path_values": rnd(_unstepped_share(df)), "recreated_walks": fresh,
              "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b)}
        shown = ", ".join(shapes[:6]) + (" ..." if count > len(shapes[:6]) else "")
        moved = "" if change is None else f"; their joint norm changed by {change:.1g} relative over the run"
        if fresh:
            moved = (f"; they are made anew at every forward: at {fresh} later walk(s), the tensors found before had "
                     "been freed with their step's graph and fresh ones of the same kind were on the path, so each "
                     "step draws them again and whatever they learn is thrown away")
        return [Finding(
            "params_unregistered", severity, ctx.name,
            f"{count} trainable tensors ({values} values; shapes {shown}) are on the loss's path but belong to no "
            "registered module of the model (kept in a plain list/dict, or created in forward) and to no param "
            f"group: they get gradients and nothing steps them{moved}.", ev,
            "Register them: hold sub-modules in nn.ModuleList / nn.ModuleDict (not a Python list or dict) and "
            "tensors as nn.Parameter attributes of a module, then build the optimizer from model.parameters() "
            "after every module exists; if they are meant to stay fixed, set requires_grad=False.",
            "unregistered")]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        # the reading is direct, but the gate waits for the loss to stop falling (rules.persistence) as
        # ParamsOutsideOptimizer's does: a part kept out of training on purpose reads the same and such a run learns.
        # Where the unstepped values are most of the path's (UNSTEPPED_MAJORITY), the model's movement says nothing
        # (the optimizer holds a minority: a logit scale), so persistence is counted in observations, as
        # LearningRateGone does for weights that cannot move
        holds = _holds(df)
        if _recreated(df) >= RECREATED_MIN:  # direct; held PERSIST_MIN_OBS steps, loss not falling
            first = int(finite(series(df, PROBE, "unregistered", "recreated")).index[0])
            seen = series(df, "loss_split", primary_component(df), "value").index
            return int((seen >= first).sum()) >= PERSIST_MIN_OBS and not loss_falling(df, first)
        if _unstepped_share(df) <= UNSTEPPED_MAJORITY:
            return stuck(df, holds)
        since = held_since(holds)
        return (since is not None and int((holds.index >= since).sum()) >= PERSIST_MIN_OBS
                and not loss_falling(df, since))


def _recreated(df: pd.DataFrame) -> int:
    """Walks that found fresh unregistered leaves after the earlier ones had been freed."""
    return int(finite(series(df, PROBE, "unregistered", "recreated")).sum())


def _unstepped_share(df: pd.DataFrame) -> float:
    """Unregistered values / (unregistered + in a param group) on the loss's path, at the last walk."""
    out = finite(series(df, PROBE, "unregistered", "numel"))
    held = finite(series(df, PROBE, "in_groups", "numel"))
    if out.empty or held.empty or float(out.iloc[-1]) + float(held.iloc[-1]) <= 0:
        return 0.0
    return float(out.iloc[-1]) / (float(out.iloc[-1]) + float(held.iloc[-1]))


def _norm_change(df: pd.DataFrame) -> float | None:
    """|last / first - 1| of the leaves' joint norm; None with fewer than two readings (or a zero norm)."""
    norm = finite(series(df, PROBE, "unregistered", "norm"))
    if len(norm) < 2 or float(norm.iloc[0]) <= 0:
        return None
    return abs(float(norm.iloc[-1]) / float(norm.iloc[0]) - 1.0)


def _holds(df: pd.DataFrame) -> pd.Series:
    """Per observed step of the primary loss: unregistered leaves were found (last walk so far) and their norm,
    where read, is still the first one."""
    steps = series(df, "loss_split", primary_component(df), "value").index
    n = series(df, PROBE, "unregistered", "count")
    if steps.empty or n.empty:
        return pd.Series(dtype=bool)
    found = n.reindex(n.index.union(steps)).ffill().reindex(steps).fillna(0.0) > 0
    norm = finite(series(df, PROBE, "unregistered", "norm"))
    if len(norm) and float(norm.iloc[0]) > 0:
        still = (norm / float(norm.iloc[0]) - 1.0).abs() <= UNMOVED_REL
        found &= still.reindex(steps).fillna(True).astype(bool)
    return found
