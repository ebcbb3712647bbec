"""A target that stands out from nothing but a group: the loss left chance because each row learned which group of
candidates its target belongs to, and inside that group the target is no more likely than any other member
(probe ``contrastive``, `loss_in_group` against `ln_group`)."""

from __future__ import annotations

import pandas as pd

from ..definitions import CHANCE_REL_TOL, learned, left_chance
from ..findings import Finding
from .base import Emit, Rule, RunContext, end_loss, finite, primary_component, rnd, saved_share, series, span, window
from .contrastive import DUPLICATE_READINGS, FALSE_NEGATIVE_GAP
from .persistence import PERSIST_MIN_OBS, held_since, loss_falling, persisted

# A row "learned its group" when its target falls among the candidates it gives more than the uniform 1/C: a
# row that has not learned it holds its target there about as often as the group is a share of the candidates
# (a quarter to a half here), so three quarters of the rows is a group the model tells apart, not noise.
TARGET_IN_GROUP_MIN = 0.75


class TargetOnlyInGroup(Rule):
    """The loss split at the group each row narrowed to: learned down to the group, at chance inside it."""

    topic = "contrastive"
    emits = (Emit("target_only_in_group", ("error",), "wrong_targets", 2),)
    needs = (("contrastive", "loss_in_group"),)
    thresholds = {"TARGET_IN_GROUP_MIN": TARGET_IN_GROUP_MIN, "CHANCE_REL_TOL": CHANCE_REL_TOL,
                  "FALSE_NEGATIVE_GAP": FALSE_NEGATIVE_GAP}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        mean, ln_b = end_loss(df)
        if not left_chance(mean, ln_b) or learned(mean, ln_b):
            return []
        holds = _holds(df)
        if holds.empty or not bool(window(holds).all()):
            return []
        if _copies_explain(df):
            return []  # the group is the positive's own copies: false_negatives reads what they cost
        read = {m: window(finite(series(df, "contrastive", "logits", m)))
                for m in ("group_share", "group_mass", "target_in_group", "loss_in_group", "ln_group")}
        v = {m: float(s.mean()) for m, s in read.items()}
        comp = primary_component(df)
        ev = {"component": comp, "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b),
              **{f"{m}_end": rnd(x) for m, x in v.items()}, "window_steps": span(read["loss_in_group"])}
        return [Finding(
            "target_only_in_group", "error", ctx.name,
            f"{comp} left chance ({mean:.4f}, ln(B) = {ln_b:.4f}) only by telling groups apart: each row puts "
            f"{v['group_mass']:.0%} of its probability on about {v['group_share']:.0%} of the candidates, and "
            f"{v['target_in_group']:.0%} of the targets fall in that group, but inside it the target's loss is "
            f"{v['loss_in_group']:.4f} against ln |group| = {v['ln_group']:.4f}: no more likely than any other "
            "member. The targets carry which group a row belongs to and nothing that singles out its pair (features "
            "gathered or concatenated in another layout than the split that reads them, labels that point at "
            "another sample of the same kind, or pairs that agree only up to a class).", ev,
            "Check that target i is row i's own pair in the logits as built: gather image and text features "
            "separately (or split a concatenated gather rank by rank), and build the labels in the order of the "
            "logits' rows and columns.", "logits")]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        # early in training a model tells coarse groups apart before it singles out pairs: only a split that held over
        # PERSIST_MIN_OBS readings while the model kept learning is an alarm: the weights moved by their norm, or the
        # loss fell (the rows putting more of their mass on their group, the part a model can learn here) while the
        # part inside the group stayed at chance at every one of those readings, which no learning of the pairs gives
        holds = _holds(df)
        since = held_since(holds)
        return since is not None and (persisted(df, holds, since) or (
            int((holds.index >= since).sum()) >= PERSIST_MIN_OBS and loss_falling(df, since)))


def _holds(df: pd.DataFrame) -> pd.Series:
    """Per expensive step: the targets inside their rows' groups and at chance there (the at-chance band of the
    whole loss, CHANCE_REL_TOL, applied to the group: loss_in_group >= (1 - tol) ln |group|)."""
    inside = finite(series(df, "contrastive", "logits", "target_in_group"))
    loss_in = finite(series(df, "contrastive", "logits", "loss_in_group"))
    ln_g = finite(series(df, "contrastive", "logits", "ln_group"))
    frame = pd.concat({"inside": inside, "loss_in": loss_in, "ln_g": ln_g}, axis=1).dropna()
    return ((frame["inside"] >= TARGET_IN_GROUP_MIN) & (frame["ln_g"] > 0)
            & (frame["loss_in"] >= (1.0 - CHANCE_REL_TOL) * frame["ln_g"]))


def _copies_explain(df: pd.DataFrame) -> bool:
    """The duplicates' counterfactual takes FALSE_NEGATIVE_GAP of the loss or more on the end window: the group a
    row cannot see into is its positive's copies."""
    for _, _, masked, full in DUPLICATE_READINGS.values():
        gap = saved_share(df, full, masked)
        if len(gap) and float(window(gap).mean()) >= FALSE_NEGATIVE_GAP:
            return True
    return False
