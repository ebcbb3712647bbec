"""Parameters the optimizer was given to train that are frozen (probe ``optimizer``: per param group frozen,
frozen_stepped, params and lr).

A frozen part passed to the optimizer is common and harmless: `AdamW(model.parameters())` over a model whose backbone
has requires_grad=False mixes frozen and trainable tensors in one group, and the optimizer skips the frozen ones.
Two readings say the frozen tensors were meant to train: a param group with an lr > 0 in which every tensor is
frozen (a group built for them, their own lr: `add_param_group` when a backbone was unfrozen), and frozen tensors
the optimizer holds state for (it stepped them before: a run resumed from a checkpoint whose callback froze them
again, a part frozen again after it trained). Either, at the end of a run that did not learn, is a part of the model
cut off from training by its `requires_grad`: it gets no gradient and never changes.
"""

from __future__ import annotations

import pandas as pd

from ..definitions import learned
from ..findings import Finding
from .base import Emit, Rule, RunContext, end_loss, finite, rnd, series, targets
from .persistence import PERSIST_MIN_OBS, held_since, stuck


class FrozenInOptimizer(Rule):
    """Param groups holding frozen tensors that were meant to train (a whole group frozen with an lr > 0, or frozen
    tensors the optimizer stepped before), in a run that did not learn."""

    topic = "optimizer"
    emits = (Emit("frozen_in_optimizer", ("info", "error"), "no_gradient_path", 2),)
    needs = (("optimizer", "frozen"),)
    thresholds = {"PERSIST_MIN_OBS": PERSIST_MIN_OBS}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        groups = {}
        for g in targets(df, "optimizer", "frozen"):
            held = _meant_to_train(df, g)
            if held is not None and bool(held.iloc[-1]):
                groups[g] = held
        if not groups:
            return []
        mean, ln_b = end_loss(df)
        at_end = {g: {"frozen": int(series(df, "optimizer", g, "frozen").iloc[-1]),
                      "frozen_stepped": _last(df, g, "frozen_stepped"), "trainable": _last(df, g, "params"),
                      "lr": float(finite(series(df, "optimizer", g, "lr")).iloc[-1])} for g in groups}
        frozen = sum(v["frozen"] for v in at_end.values())
        stepped = sum(v["frozen_stepped"] for v in at_end.values())
        whole = [g for g, v in at_end.items() if v["trainable"] == 0]
        first = min(int(h[h].index[0]) for h in groups.values())
        ev = {"groups": at_end, "frozen_tensors": frozen, "frozen_stepped": stepped, "whole_groups_frozen": whole,
              "steps": [first, int(df["step"].max())], "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b)}
        why = []
        if whole:
            lrs = ", ".join(f"{at_end[g]['lr']:.3g}" for g in whole)
            why.append(f"param group(s) {', '.join(whole)} hold only frozen tensors and an lr of {lrs}")
        if stepped:
            why.append(f"the optimizer holds state for {stepped} of them: it stepped them before (a resumed run, "
                       "a part frozen again after training)")
        severity = "info" if learned(mean, ln_b) else "error"
        return [Finding(
            "frozen_in_optimizer", severity, ctx.name,
            f"{frozen} tensors in the optimizer's param groups have requires_grad=False at the end of the run "
            f"(steps {first}-{ev['steps'][1]}), and they were meant to train: {'; '.join(why)}. They get no "
            f"gradient and never change; the loss ends at {mean:.4f} vs ln(B) = {ln_b:.4f}.", ev,
            "Give these parameters requires_grad=True again (a fine-tuning callback that freezes before training "
            "also on a resumed run must unfreeze what the restored param groups hold), or drop their group if they "
            "are meant to stay fixed.", whole[0] if whole else next(iter(groups)))]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        """Both readings at once (a group of nothing but frozen tensors, which the optimizer stepped before) held
        PERSIST_MIN_OBS observations in a run that has not learned: no run that meant to freeze them shows both
        before it learned (a stage that freezes a trained backbone comes after the loss fell). Either alone waits
        until it persisted and the loss did not fall over it (a backbone frozen in its own group for the first
        epochs of a schedule that unfreezes it later reads the same and learns meanwhile)."""
        held = None
        for g in finding.evidence["groups"]:
            h = _meant_to_train(df, g)
            if h is not None:
                held = h if held is None else (held | h.reindex(held.index, fill_value=False))
        if held is None:
            return False
        since = held_since(held)
        ev = finding.evidence
        if since is not None and ev["whole_groups_frozen"] and ev["frozen_stepped"]:
            return int((held.index >= since).sum()) >= PERSIST_MIN_OBS and not learned(*end_loss(df))
        return stuck(df, held)


def _meant_to_train(df: pd.DataFrame, group: str) -> pd.Series | None:
    """Per observation of `group`: it holds frozen tensors and either nothing trainable (with an lr > 0) or frozen
    tensors the optimizer stepped before."""
    frozen = series(df, "optimizer", group, "frozen")
    if frozen.empty:
        return None
    trainable = series(df, "optimizer", group, "params").reindex(frozen.index)
    stepped = series(df, "optimizer", group, "frozen_stepped").reindex(frozen.index).fillna(0.0)
    lr = series(df, "optimizer", group, "lr").reindex(frozen.index)
    return (frozen > 0) & (lr > 0) & ((trainable == 0) | (stepped > 0))


def _last(df: pd.DataFrame, group: str, metric: str) -> int:
    s = series(df, "optimizer", group, metric)
    return int(s.iloc[-1]) if len(s) else 0

