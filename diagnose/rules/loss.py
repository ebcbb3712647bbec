"""Rules on the loss: where it sits against chance ln(B), how many negatives it has, the temperature."""

from __future__ import annotations

import math

import pandas as pd

from ..definitions import CHANCE_REL_TOL, relative_gap
from ..findings import Finding
from .base import Emit, Rule, RunContext, rnd, series, span, targets, window
from .gradients import SETTLED_CUMULATIVE_UPDATE, settled

# Contrastive negatives per row (B - 1): SimCLR (Chen et al. 2020, fig. 9) still learns at batch 256
# and degrades steadily below it; fewer than 16 negatives gives a weak, noisy signal, and fewer than
# 4 leaves the loss almost no room below ln(B) (ln 2 = 0.69 at B = 2).
FEW_NEGATIVES_WARN, FEW_NEGATIVES_ERROR = 16, 4
# open_clip clamps exp(logit_scale) at 100; within 1% of it the temperature is pinned. A logit scale
# below 2 makes cosine logits span at most [-2, 2]: the softmax cannot be confident (drift to 1).
CLAMP_REL, LOW_LOGIT_SCALE = 0.01, 2.0


class LossAtChance(Rule):
    """Each loss component's end-of-run mean against its chance value ln(B)."""

    topic = "loss"
    emits = (Emit("loss_at_chance", ("error",)), Emit("loss_above_chance", ("error",)))
    needs = (("loss_split", "value"), ("loss_split", "chance"))
    thresholds = {"CHANCE_REL_TOL": CHANCE_REL_TOL, "SETTLED_CUMULATIVE_UPDATE": SETTLED_CUMULATIVE_UPDATE}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        return [f for comp in targets(df, "loss_split", "chance") for f in self._component(df, ctx, comp)]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        # every run starts near ln(B), and a random init with a sharp temperature can start above it:
        # either is news only once the weights have moved (gradients.settled). A loss that rises past
        # its first value in the first steps is not evidence on its own: healthy runs do it (the
        # direct reference's MRL loss on seeds 2 and 6, above its step-0 value at step 4, then 0.012)
        return settled(df)

    def _component(self, df: pd.DataFrame, ctx: RunContext, comp: str) -> list[Finding]:
        values, chance = series(df, "loss_split", comp, "value"), series(df, "loss_split", comp, "chance")
        if values.empty or chance.empty:
            return []
        w = window(values)
        ln_b, mean = float(chance.iloc[-1]), float(w.mean())
        rel = relative_gap(mean, ln_b)
        if not math.isfinite(rel):
            return []
        ev = {"component": comp, "window_steps": span(w), "loss_mean": rnd(mean), "chance_ln_B": rnd(ln_b),
              "batch_size": ctx.batch_size, "implied_candidates": rnd(math.exp(mean), 1),
              "first_step_loss": rnd(values.iloc[0]), "relative_gap": rnd(rel)}
        if abs(rel) < CHANCE_REL_TOL:
            n = round(math.exp(ln_b))
            return [Finding(
                "loss_at_chance", "error", ctx.name,
                f"{comp} averaged {mean:.4f} over steps {ev['window_steps'][0]}-{ev['window_steps'][1]}, "
                f"{abs(rel):.1%} from ln(B) = ln({n}) = {ln_b:.4f}: the model scores the matching caption no better "
                f"than the other {n - 1} in the batch (exp(loss) = {math.exp(mean):.1f} equally likely candidates).",
                ev, "Look at the collapse and gradient findings of this run: a loss pinned at ln(B) means "
                "uniform logits, usually identical embeddings or no gradient reaching the encoder.", comp)]
        if rel >= CHANCE_REL_TOL:
            return [Finding(
                "loss_above_chance", "error", ctx.name,
                f"{comp} averaged {mean:.4f} over the last steps, {rel:.1%} above chance ln(B) = {ln_b:.4f}: "
                "the model is confidently wrong, worse than guessing.", ev,
                "Check for misaligned pairs, a temperature that is too high, or diverging updates.", comp)]
        return []


class FewNegatives(Rule):
    """Candidates per row from the context: too few negatives make a weak contrastive signal."""

    topic = "loss"
    emits = (Emit("few_negatives", ("warning", "error"), "too_few_negatives", 1),)
    thresholds = {"FEW_NEGATIVES_WARN": FEW_NEGATIVES_WARN, "FEW_NEGATIVES_ERROR": FEW_NEGATIVES_ERROR}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        pool = ctx.pool
        if pool is None or pool - 1 >= FEW_NEGATIVES_WARN:
            return []
        negatives = pool - 1
        sev = "error" if negatives < FEW_NEGATIVES_ERROR else "warning"
        return [Finding(
            "few_negatives", sev, ctx.name,
            f"each row is scored against only {negatives} negative(s) ({pool} candidates); chance is "
            f"ln({pool}) = {math.log(pool):.3f}, so the loss can fall at most that far and "
            "its gradient carries little information about the rest of the data.",
            {"batch_size": ctx.batch_size, "negatives_per_row": negatives, "chance_ln_B": rnd(math.log(pool)),
             **({"candidates": pool} if pool != ctx.batch_size else {})},
            "Raise the batch size (or gather features across ranks), or use a memory bank of negatives.")]


class Temperature(Rule):
    """The learned logit scale exp(t): pinned at its clamp, or so low the softmax cannot be confident."""

    topic = "loss"
    emits = (Emit("temperature_at_clamp", ("warning",), "temperature", 3),
             Emit("temperature_toward_1", ("warning",), "temperature", 2))
    needs = (("loss_split", "logit_scale"),)
    thresholds = {"CLAMP_REL": CLAMP_REL, "LOW_LOGIT_SCALE": LOW_LOGIT_SCALE}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        s = series(df, "loss_split", "extras", "logit_scale")
        if s.empty:
            return []
        return temperature_findings(ctx.name, float(s.iloc[-1]), ctx.max_logit_scale,
                                    {"logit_scale_first": rnd(s.iloc[0], 3), "steps": span(s)})


def temperature_findings(run: str, scale: float, cap: float | None, evidence: dict, what: str = "the logit scale",
                         target: str = "") -> list[Finding]:
    """Shared by the record rule and the checkpoint rule: the same condition has one id wherever it is seen."""
    ev = {**evidence, "logit_scale_end": rnd(scale, 3), "clamp": cap}
    if not math.isfinite(scale):
        return []
    if cap is not None and scale >= (1 - CLAMP_REL) * cap:
        return [Finding("temperature_at_clamp", "warning", run,
                        f"{what} reached the clamp ({scale:.2f} of max {cap:g}): the temperature is no longer learned.", ev,
                        "Usually harmless late in training; early on it hints at a loss the model can only lower by sharpening.",
                        target)]
    if scale < LOW_LOGIT_SCALE:
        first = evidence.get("logit_scale_first")
        since = f" (from {first:.2f})" if first is not None else ""
        return [Finding("temperature_toward_1", "warning", run,
                        f"{what} is {scale:.2f}{since}: logits of unit vectors then span at most ±{scale:.2f}, so even "
                        "a perfect ranking costs most of ln(B).", ev,
                        "Check the temperature init (open_clip: ln(1/0.07)) and its lr; a model that lowers the loss by "
                        "flattening the softmax points at collapse or misaligned pairs.", target)]
    return []
