"""Rules on the loss: where it sits against chance ln(B), how many negatives it has, the temperature."""

from __future__ import annotations

import math

import pandas as pd

from ..definitions import CHANCE_REL_TOL, LEARNED_LOSS_FRACTION, LEARNED_RECALL_FACTOR, at_chance, relative_gap
from ..findings import Finding
from .base import (
    EXP_SAFE,
    Emit,
    Rule,
    RunContext,
    end_loss,
    finite,
    primary_component,
    rnd,
    series,
    span,
    targets,
    window,
)
from .gradients import SETTLED_CUMULATIVE_UPDATE
from .persistence import gap_to_chance, stuck

# Contrastive negatives per row (B - 1): SimCLR (Chen et al. 2020, fig. 9) still learns at batch 256
# and degrades steadily below it; fewer than 16 negatives gives a weak, noisy signal, and fewer than
# 4 leaves the loss almost no room below ln(B) (ln 2 = 0.69 at B = 2).
FEW_NEGATIVES_WARN, FEW_NEGATIVES_ERROR = 16, 4
# open_clip clamps exp(logit_scale) at 100; within 1% of it the temperature is pinned. A logit scale
# below 2 makes cosine logits span at most [-2, 2]: the softmax cannot be confident (drift to 1).
CLAMP_REL, LOW_LOGIT_SCALE = 0.01, 2.0
# Cosine logits are s*cos: the margin of a positive over the mean negative is s*(cos_pos - cos_neg),
# and the unit sphere caps it at s*(1 - cos_neg). Once the positive cosine covers more than half of
# that room, the encoders have less margin left to win than they already won: a loss that is still
# high can then mostly fall only through sharper logits (a larger logit scale), not better embeddings.
# "More than half" is a judgment, set while looking at benchmarks/real_faults: healthy runs use 0.2-0.4
# while their loss crosses the learned bar, the logit-scale-init-1 case 0.8.
MARGIN_USED = 0.5
# A learned logit scale lags the ranking it serves: as a run learns, the best temperature for its logits
# keeps sharpening (open_clip's scale climbs from 14.3 toward its clamp of 100 over a run), so a
# temperature somewhat too soft is the normal state of a learning run. The rescale grid (probes.stats,
# steps of sqrt 2) puts the best factor at 1.41 when the optimum lies between 1x and 2x; only a grid
# optimum of at least 2x says the logits are off by more than that lag.
TEMPERATURE_OFF_FACTOR = 2.0
# Below the learned bar a soft temperature is the normal lag of a learning run: at the end of the 36
# healthy runs of benchmarks/real_faults/healthy.py (every family but Lightning's, whose watch opens in a
# callback) the logits' cross-entropy stood at most 0.17 ln B above what the same logits reach at their best
# sharper scale (0.12 where the margin used passed MARGIN_USED; `replay.py TemperatureLimitsLoss healthy all`).
# A temperature that holds at least half of the learned bar (0.25 ln B) above the ranking's own loss keeps a run
# that crossed the bar from learning further: the same mechanism as above the bar, measured as the loss it
# withholds.
TEMPERATURE_HOLDS = 0.25


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
        # either is news only once the weights have moved. A loss that rises past
        # its first value in the first steps is not evidence on its own: healthy runs do it (the
        # direct reference's MRL loss on seeds 2 and 6, above its step-0 value at step 4, then 0.012).
        # So the loss must have stayed at or above the chance band while the weights moved by their own
        # norm, without falling (rules.persistence)
        return stuck(df, gap_to_chance(df, finding.evidence["component"]) > -CHANCE_REL_TOL)

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
              "batch_size": ctx.batch_size, "implied_candidates": rnd(math.exp(mean), 1) if mean < EXP_SAFE else None,
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
    """Candidates per row: the logits' columns when they were read (probes.contrastive), else the context.
    Too few negatives make a weak contrastive signal."""

    topic = "loss"
    emits = (Emit("few_negatives", ("warning", "error"), "too_few_negatives", 1),)
    thresholds = {"FEW_NEGATIVES_WARN": FEW_NEGATIVES_WARN, "FEW_NEGATIVES_ERROR": FEW_NEGATIVES_ERROR}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        cols = series(df, "contrastive", "logits", "cols")
        # what each row is really scored against beats what was declared (a loss taken per micro-batch)
        pool = int(window(cols).median()) if len(cols) else ctx.pool
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
             **({"candidates": pool} if pool != ctx.batch_size else {}),
             **({"read_from": "logits columns"} if len(cols) else {})},
            "Raise the batch size (or gather features across ranks), or use a memory bank of negatives.")]


class Temperature(Rule):
    """The learned logit scale exp(t): pinned at its clamp, so low the softmax cannot be confident, or so low that
    unit embeddings cannot take the loss out of the chance band at all.

    Floor: over n candidates, unit rows at logit scale s reach at best ln(1 + (n - 1) exp(-s n / (n - 1))) (each
    positive at cosine 1, the others at the simplex's -1/(n - 1)). When that floor is itself within CHANCE_REL_TOL of
    ln(n) (s below ~0.1 at n = 32, ~0.17 at n = 256), a loss at chance is the scale's doing whatever the embeddings
    do: it says nothing about the pairs or the towers, and the findings that read the pairs from it (spread-out
    embeddings at chance) are explained by it. A scale that started TEMPERATURE_OFF_FACTOR or more above its end was
    driven down by training (too high an lr rewrites it with the weights): then the floor is a symptom, and only the
    warning below is given."""

    topic = "loss"
    emits = (Emit("temperature_at_clamp", ("warning",), "temperature", 3),
             Emit("temperature_toward_1", ("warning",), "temperature", 2),
             Emit("scale_floors_loss", ("error",), "temperature", 1,
                  explains=("misaligned_pairs", "embedding_collapse")))
    needs = (("loss_split", "logit_scale"),)
    thresholds = {"CLAMP_REL": CLAMP_REL, "LOW_LOGIT_SCALE": LOW_LOGIT_SCALE, "CHANCE_REL_TOL": CHANCE_REL_TOL,
                  "TEMPERATURE_OFF_FACTOR": TEMPERATURE_OFF_FACTOR}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        s = series(df, "loss_split", "extras", "logit_scale")
        if s.empty:
            return []
        ev = {"logit_scale_first": rnd(s.iloc[0], 3), "steps": span(s)}
        return self._floor(df, ctx, s) or temperature_findings(ctx.name, float(s.iloc[-1]), ctx.max_logit_scale, ev)

    @staticmethod
    def _floor(df: pd.DataFrame, ctx: RunContext, s: pd.Series) -> list[Finding]:
        from .representation import UNIT_NORM_TOL  # representation reads this module

        end = finite(window(s))
        mean, ln_b = end_loss(df)
        if end.empty or not math.isfinite(ln_b) or ln_b <= 0:
            return []
        scale, n = float(end.max()), math.exp(ln_b)
        if float(s.iloc[0]) >= TEMPERATURE_OFF_FACTOR * scale:
            # it started sharp and training drove it down (an lr that rewrites the scale as it rewrites the
            # weights): the floor is that cause's symptom, as for temperature_limits_loss
            return []
        floor = loss_floor(scale, n)
        norms = {t: float(finite(series(df, "collapse", t, "norm_mean")).median())
                 for t in ("image", "text") if len(finite(series(df, "collapse", t, "norm_mean")))}
        if (floor < (1 - CHANCE_REL_TOL) * ln_b or len(norms) < 2
                or any(abs(v - 1.0) > UNIT_NORM_TOL for v in norms.values())):
            return []
        ev = {"logit_scale_first": rnd(s.iloc[0], 4), "logit_scale_end_max": rnd(scale, 4), "candidates": rnd(n, 1),
              "loss_floor": rnd(floor), "loss_floor_share_of_ln_B": rnd(floor / ln_b), "chance_ln_B": rnd(ln_b),
              "loss_end": rnd(mean), "norm_mean_median": {k: rnd(v) for k, v in norms.items()},
              "window_steps": span(end)}
        return [Finding(
            "scale_floors_loss", "error", ctx.name,
            f"the logit scale is at most {scale:.3g} over the last steps (from {float(s.iloc[0]):.3g}) and the "
            f"embeddings are unit rows: over {n:.0f} candidates the lowest cross-entropy any embeddings can reach at "
            f"that scale is {floor:.4f} = {floor / ln_b:.1%} of ln(B) = {ln_b:.4f} (each positive at cosine 1, the "
            "others spread as far as the sphere allows), inside the band the rules call chance: the loss cannot leave "
            "chance whatever the towers learn, so a loss at chance here says nothing about the pairs.", ev,
            "Initialise the logit scale at ln(1/0.07) = 2.66 in log space (scale 14.3) and multiply the cosines by its "
            "exp(); a value passed as log(0.07), or a temperature used as a multiplier, gives a scale below 1.")]


def loss_floor(scale: float, candidates: float) -> float:
    """The lowest cross-entropy unit rows reach at logit scale `scale` over `candidates` columns: the positive at
    cosine 1, the others at the simplex's -1 / (n - 1)."""
    n = candidates
    return math.log1p((n - 1) * math.exp(-scale * n / (n - 1)))


def temperature_findings(run: str, scale: float, cap: float | None, evidence: dict, what: str = "the logit scale",
                         target: str = "") -> list[Finding]:
    """Shared by the record rule and the checkpoint rule: the same condition has one id wherever it is seen."""
    ev = {**evidence, "logit_scale_end": rnd(scale, 3), "clamp": cap}
    if not math.isfinite(scale):
        return []
    if cap is not None and scale >= (1 - CLAMP_REL) * cap:
        return [Finding("temperature_at_clamp", "warning", run,
                        f"{what} reached the clamp ({scale:.2f} of max {cap:g}): the temperature is no longer "
                        "learned.", ev,
                        "Usually harmless late in training; early on it hints at a loss the model can only lower by "
                        "sharpening.",
                        target)]
    if scale < LOW_LOGIT_SCALE:
        first = evidence.get("logit_scale_first")
        since = f" (from {first:.2f})" if first is not None else ""
        return [Finding("temperature_toward_1", "warning", run,
                        f"{what} is {scale:.2f}{since}: logits of unit vectors then span at most ±{scale:.2f}, so even "
                        "a perfect ranking costs most of ln(B).", ev,
                        "Check the temperature init (open_clip: ln(1/0.07)) and its lr; a model that lowers the loss "
                        "by "
                        "flattening the softmax points at collapse or misaligned pairs.", target)]
    return []


LOGITS = "logits.image_to_text"  # the contrastive logits passed to observe (probes.entropy)


def in_batch_top1(df: pd.DataFrame) -> float:
    """End-of-run mean share of rows whose positive has the largest logit (NaN when not recorded)."""
    acc = series(df, "softmax_entropy", LOGITS, "top1_acc")
    return float(window(acc).mean()) if len(acc) else float("nan")


def ranking_learned(df: pd.DataFrame, ln_b: float) -> bool:
    """In-batch top-1 at least LEARNED_RECALL_FACTOR x chance (1/B with B = exp(chance loss))."""
    top1 = in_batch_top1(df)
    return math.isfinite(top1) and math.isfinite(ln_b) and top1 >= LEARNED_RECALL_FACTOR / math.exp(ln_b)


class FlatLogits(Rule):
    """The logits rank the positive first far more often than chance, yet the loss sits at ln(B).

    Mechanism: cross-entropy sees the softmax of the logits, retrieval only their order. When the order
    is right in many rows (in-batch top-1 at least LEARNED_RECALL_FACTOR x chance 1/B, the bar the
    project uses for "retrieval learned") while the loss stays in the at-chance band, the softmax is
    nearly uniform over logits that differ by almost nothing: their spread, set by the logit scale
    (temperature), is too small. The pairs carry signal (the ranking found it) and the gradient reaches
    the encoders (the ranking moved), so neither misaligned pairs nor a cut gradient explain it.
    """

    topic = "loss"
    emits = (Emit("logits_flat", ("error",), "temperature", 1),)
    needs = (("softmax_entropy", "top1_acc"), ("loss_split", "value"), ("loss_split", "chance"))
    thresholds = {"LEARNED_RECALL_FACTOR": LEARNED_RECALL_FACTOR, "CHANCE_REL_TOL": CHANCE_REL_TOL}

    # no alarm gate (Rule.alarm: always): unlike a loss at ln(B), this state is not the initial one; a
    # ranking 10x better than chance is itself evidence that the weights moved (or came pretrained)

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        mean, ln_b = end_loss(df)
        if not (at_chance(mean, ln_b) and ranking_learned(df, ln_b)):
            return []
        if _rows_coincide(df):
            return []  # the logits are flat because the rows are: embedding_collapse's reading, at any usual scale
        candidates, top1 = math.exp(ln_b), in_batch_top1(df)
        prob = series(df, "softmax_entropy", LOGITS, "positive_prob_mean")
        p_pos = float(window(prob).mean()) if len(prob) else float("nan")
        comp = primary_component(df)
        ev = {"component": comp, "loss_mean": rnd(mean), "chance_ln_B": rnd(ln_b), "top1_acc_end": rnd(top1),
              "top1_chance": rnd(1 / candidates), "positive_prob_end": rnd(p_pos),
              "positive_prob_times_candidates": rnd(p_pos * candidates, 3),
              "window_steps": span(window(series(df, "softmax_entropy", LOGITS, "top1_acc")))}
        scale = series(df, "loss_split", "extras", "logit_scale")
        if len(scale):
            ev["logit_scale_logged"] = rnd(scale.iloc[-1], 3)
        return [Finding(
            "logits_flat", "error", ctx.name,
            f"the logits rank the matching caption first in {top1:.0%} of rows (chance {1 / candidates:.1%}), yet "
            f"{comp} "
            f"sits at ln(B) ({mean:.4f} vs {ln_b:.4f}): the softmax gives the positive {p_pos:.4f} = "
            f"{p_pos * candidates:.2f}/B, almost uniform. The ranking is learned but the logits barely differ: their "
            "scale (the temperature) is far too small for the softmax to become confident.", ev,
            "Multiply the cosine similarities by the logit scale, logits = exp(t) * img @ txt.T with t initialised to "
            "ln(1/0.07) (open_clip, OpenAI CLIP); a scale used as a divisor, or one near 0, keeps the loss at ln(B).",
            LOGITS)]


def _rows_coincide(df: pd.DataFrame) -> bool:
    """A tower whose rows ended as one vector (end-window mean pairwise cosine >= COLLAPSE_COSINE, the reading of
    `embedding_collapse`): scores against its rows differ by the scale times a cosine spread of a few hundredths at
    most, so the logits are flat at the usual scales (1/0.07) whatever the temperature; the flatness is the rows'."""
    from .representation import COLLAPSE_COSINE  # representation reads this module

    for name in ("image", "text"):
        cos = finite(series(df, "collapse", name, "cosine_mean"))
        if len(cos) and float(window(cos).mean()) >= COLLAPSE_COSINE:
            return True
    return False


def _logits_mean(df: pd.DataFrame, metric: str) -> float:
    """End-window mean of a contrastive-logits metric over both directions recorded (NaN if none)."""
    parts = [window(series(df, "softmax_entropy", t, metric)) for t in targets(df, "softmax_entropy", metric)
             if t.startswith("logits.")]
    values = pd.concat(parts) if parts else pd.Series(dtype=float)
    return float(values.mean()) if len(values) else float("nan")


def margin_used(df: pd.DataFrame) -> dict:
    """End-window cosine of the positive pairs, of the non-matching pairs, and the share of the room
    1 - cos_neg that the positive margin cos_pos - cos_neg covers (collapse probe, pair targets)."""
    for pair in targets(df, "collapse", "negative_cosine"):
        align, neg = series(df, "collapse", pair, "alignment"), series(df, "collapse", pair, "negative_cosine")
        if len(align) and len(neg):
            cos_pos, cos_neg = 1 - float(window(align).mean()) / 2, float(window(neg).mean())
            room = 1 - cos_neg
            used = (cos_pos - cos_neg) / room if room > 0 else float("nan")
            return {"pair": pair, "positive_cosine": cos_pos, "negative_cosine": cos_neg, "margin_used": used}
    return {}


class TemperatureLimitsLoss(Rule):
    """Between chance and learned, the same logits would count as learned at a sharper temperature, and
    the embeddings have already used most of the cosine margin they can: the logit scale holds the loss.

    Mechanism: `probes.entropy` measures, on every observed batch, the cross-entropy of the logits as
    given and the lowest cross-entropy of a*logits for a sharper factor a (the same ranking at
    temperature 1/(a*s)). If the loss as given is above the learned bar (LEARNED_LOSS_FRACTION x ln B)
    and the rescaled one below it, the ranking is good enough and the scale is what separates the run
    from "learned". That alone also holds while a healthy run crosses the bar: a learned scale lags the
    ranking (TEMPERATURE_OFF_FACTOR), and in the first fast steps the ranking runs ahead of the loss,
    but then the cosines are far from their ceiling (positive cosine 0.2-0.4 on the healthy runs of
    benchmarks/real_faults), so better embeddings will still lower the loss. Only when the best factor
    is at least TEMPERATURE_OFF_FACTOR and the positive pairs cover more than MARGIN_USED of the room
    1 - cos_neg can the loss mostly fall through the scale alone: a logit scale initialised too small,
    fixed too small, or used as a divisor. A logged scale that fell by TEMPERATURE_OFF_FACTOR or more
    during the run started sharp enough: training drove it down (too high an lr rewrites the scale as it
    rewrites the weights), so the soft temperature is that cause's symptom and this rule stays quiet.
    Below the bar the same reading names a run that crossed it but is held there: the logits' loss at
    least TEMPERATURE_HOLDS x ln B above what their own ranking reaches at a sharper scale.
    """

    topic = "loss"
    emits = (Emit("temperature_limits_loss", ("error",), "temperature", 1),)
    needs = (("softmax_entropy", "cross_entropy_best_scale"), ("collapse", "negative_cosine"), ("loss_split", "chance"))
    thresholds = {"LEARNED_LOSS_FRACTION": LEARNED_LOSS_FRACTION, "MARGIN_USED": MARGIN_USED,
                  "TEMPERATURE_OFF_FACTOR": TEMPERATURE_OFF_FACTOR, "TEMPERATURE_HOLDS": TEMPERATURE_HOLDS,
                  "CHANCE_REL_TOL": CHANCE_REL_TOL}

    # no alarm gate (Rule.alarm: always): at random init positive and negative pairs have the same
    # cosine (margin used ~0) and the loss sits at ln B, so this state is never the initial one; with
    # pretrained encoders it is a fault from the first step (the scale is wrong for those embeddings)

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        _, ln_b = end_loss(df)
        ce, best, factor = (_logits_mean(df, m) for m in ("cross_entropy", "cross_entropy_best_scale",
                                                          "best_scale_factor"))
        if not all(math.isfinite(x) for x in (ln_b, ce, best, factor)):
            return []
        bar = LEARNED_LOSS_FRACTION * ln_b
        # at ln(B) itself a flat softmax is logits_flat's condition; here the loss has left chance
        above_bar = bar <= ce and not at_chance(ce, ln_b) and best < bar
        below_bar = ce < bar and ce - best >= TEMPERATURE_HOLDS * ln_b  # crossed the bar, held far above the ranking
        if not ((above_bar or below_bar) and factor >= TEMPERATURE_OFF_FACTOR):
            return []
        margin = margin_used(df)
        if not margin or not margin["margin_used"] >= MARGIN_USED:
            return []
        scale = series(df, "loss_split", "extras", "logit_scale")
        if len(scale) and float(scale.iloc[0]) >= TEMPERATURE_OFF_FACTOR * float(scale.iloc[-1]):
            # the scale started sharp enough and training drove it down (an lr that also rewrites the
            # temperature, open_clip#815): the soft temperature is a symptom; the update rules name why
            return []
        ev = {"cross_entropy_end": rnd(ce), "cross_entropy_best_scale_end": rnd(best),
              "best_scale_factor": rnd(factor, 2),
              "learned_bar": rnd(bar), "chance_ln_B": rnd(ln_b), "held_share_of_ln_B": rnd((ce - best) / ln_b),
              **{k: (rnd(v) if isinstance(v, float) else v) for k, v in margin.items()},
              "window_steps": span(window(series(df, "softmax_entropy", LOGITS, "cross_entropy")))}
        if len(scale):
            ev["logit_scale_first"], ev["logit_scale_end"] = rnd(scale.iloc[0], 3), rnd(scale.iloc[-1], 3)
        where = (f"above the learned bar {bar:.3f} (half of ln B = {ln_b:.3f})" if above_bar else
                 f"below the learned bar {bar:.3f} but {(ce - best) / ln_b:.0%} of ln B above the ranking's own loss")
        return [Finding(
            "temperature_limits_loss", "error", ctx.name,
            f"the logits' cross-entropy averages {ce:.3f}, {where}: "
            f"the same logits at their best sharper scale (on average {factor:.1f}x) would reach {best:.3f}; "
            "the positive pairs already sit "
            f"at cosine {margin['positive_cosine']:.2f} against {margin['negative_cosine']:.2f} for the others "
            f"({margin['margin_used']:.0%} of the margin the unit sphere allows): better embeddings can win little, "
            "the logit scale (temperature) keeps the softmax from becoming confident.", ev,
            "Check the logit scale: initialised at ln(1/0.07) = 2.66 in log space (scale 14.3), multiplied, learned "
            "with a small enough lr to not decay (open_clip clamps it at 100).", LOGITS)]
