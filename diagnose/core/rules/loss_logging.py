"""Rules on what the training log says about the loss: a total that is not the weighted sum of its
logged components, components logged as identical, and a loss logged as a constant multiple of the
cross-entropy of the logits observed with it, or as its running mean, moving average, micro-batch sum or a mean
divided once more, and a logged loss whose trend does not track the cross-entropy of the logits observed with it."""

from __future__ import annotations

import math

import pandas as pd

from ..definitions import at_chance, learned
from ..findings import Finding
from .base import Emit, Rule, RunContext, finite, primary_component, rnd, series, span, targets, window
from .persistence import IMPROVEMENT_SE, PERSIST_MIN_OBS, falling

# total - sum(w_i L_i) beyond float rounding of a logged value means the log misstates a component.
LOGGING_REL_TOL = 1e-3
# Two logged components are "identical" when they agree to half a unit in the 4th decimal: the
# precision of the seed's printed logs (e.g. "CLIP: 4.8481, MRL: 4.8481").
IDENTICAL_ATOL = 5e-5
# Share of window steps on which the components must be identical to call it a pattern.
IDENTICAL_SHARE = 0.9


class LoggedTotal(Rule):
    """total - sum(w_i x logged component_i), as the loss-split probe measures it every step."""

    topic = "logging"
    emits = (Emit("loss_logging_inconsistent", ("error",), "logging_misstates_loss", 1),)
    needs = (("loss_split", "total_minus_weighted_sum"), ("loss_split", "value"))
    thresholds = {"LOGGING_REL_TOL": LOGGING_REL_TOL}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        gap = series(df, "loss_split", "total", "total_minus_weighted_sum")
        tot = series(df, "loss_split", "total", "value")
        if tot.empty:
            return []
        if gap.empty:  # no weights given: a total is at least not one of its components while the others differ
            return self._one_component(df, ctx, tot)
        rel = (gap.abs() / tot.abs().clip(lower=1e-12)).dropna()
        bad = rel[rel > LOGGING_REL_TOL]
        if not len(bad):
            return []
        weights = {t: rnd(series(df, "loss_split", t, "weight").iloc[-1],
                          4) for t in targets(df, "loss_split", "weight")}
        return [Finding(
            "loss_logging_inconsistent", "error", ctx.name,
            f"the logged total differs from the sum of weight x logged component on {len(bad)} of {len(rel)} "
            f"steps (largest gap {float(gap.abs().max()):.4g} at step {int(gap.abs().idxmax())}): at least one "
            "logged component is not the value the objective used.",
            {"steps_inconsistent": int(len(bad)), "steps_total": int(len(rel)), "max_abs_gap": rnd(gap.abs().max(), 6),
             "at_step": int(gap.abs().idxmax()), "weights": weights},
            "Log each component exactly as it enters the total (and the MRL dims it covered).")]


    def _one_component(self, df: pd.DataFrame, ctx: RunContext, tot: pd.Series) -> list[Finding]:
        """Without weights: the logged total equal (to LOGGING_REL_TOL) to one of two or more logged components on
        every step read (at least PERSIST_MIN_OBS), while it is neither their sum nor their mean (on most steps) and
        another component differs from it: a "total" that is the last value a loop left in its variable."""
        comps = {c: series(df, "loss_split", c, "value") for c in targets(df, "loss_split", "value") if c != "total"}
        if not comps:
            return []
        frame = pd.concat({"total": tot, **comps}, axis=1).dropna()
        frame = frame[frame.abs().lt(float("inf")).all(axis=1)]
        if len(frame) < PERSIST_MIN_OBS:
            return []
        t, parts = frame["total"], frame.drop(columns="total")
        counted = _counted_over(t, parts.sum(axis=1))
        if counted is not None:
            return [self._counted_finding(ctx, t, parts, counted)]
        if len(comps) < 2:
            return []

        def close(x: pd.Series) -> pd.Series:
            return (t - x).abs() <= LOGGING_REL_TOL * t.abs().clip(lower=1e-12)

        same = [c for c in parts if bool(close(parts[c]).all())]
        others = [c for c in parts if c not in same]
        # the sum or the mean may cross the total at a step or two; a total that is them follows them on most steps
        followed = max(close(parts.sum(axis=1)).mean(), close(parts.mean(axis=1)).mean())
        if len(same) != 1 or not others or followed >= 0.5:
            return []
        c = same[0]
        apart = (parts[others].sub(t, axis=0).abs()).max(axis=1)
        ev = {"equals_component": c, "steps_compared": len(frame), "components": sorted(parts),
              "total_end": rnd(t.iloc[-1]), "components_mean_end": rnd(parts.mean(axis=1).iloc[-1]),
              "max_gap_to_other_components": rnd(apart.max()), "steps": span(t)}
        return [Finding(
            "loss_logging_inconsistent", "error", ctx.name,
            f"the logged total equals the component {c} on all {len(frame)} steps read (last: {t.iloc[-1]:.4f}) and "
            f"is neither the sum nor the mean of the {len(parts.columns)} logged components (their mean: "
            f"{ev['components_mean_end']:.4f}), which differ from it by up to {ev['max_gap_to_other_components']:.4g}: "
            f"the 'total' is one component (the last a loop over the components left in its variable, a key copied), "
            "not the objective; its curve says nothing about the other terms.", ev,
            "Log the loss that is backpropagated as the total (loss.item(), after the components are summed); pass "
            "weights= to observe so the total is checked against the weighted sum of its components.")]


    def _counted_finding(self, ctx: RunContext, t: pd.Series, parts: pd.DataFrame, m: int) -> Finding:
        ev = {"total_over_sum": m, "steps_compared": len(t), "components": sorted(parts), "total_end": rnd(t.iloc[-1]),
              "components_sum_end": rnd(parts.sum(axis=1).iloc[-1]), "steps": span(t)}
        return Finding(
            "loss_logging_inconsistent", "error", ctx.name,
            f"the logged total is exactly {m}x the sum of the {len(parts.columns)} logged component(s) "
            f"({', '.join(sorted(parts))}) on all {len(t)} steps read (last: {t.iloc[-1]:.4f} against their sum "
            f"{ev['components_sum_end']:.4f}): every component is counted {m} times, as a total summed over a dict "
            "that already holds it counts itself; the curve is not the objective.", ev,
            "Sum the components into a local variable and store it afterwards (or log loss.item() of the "
            "backpropagated loss); pass weights= to observe so the total is checked against them.")


def _counted_over(total: pd.Series, summed: pd.Series) -> int | None:
    """m >= 2 where the total is m x the components' sum on every step (to LOGGING_REL_TOL), else None: a total that
    counts each component a whole number of times more than once. A mean (1/n) and a sum (1) are what totals are; a
    weighting of its own would not give the same whole multiple on every step unless it weighs every term alike."""
    ratio = (total / summed.where(summed.abs() > 1e-12)).dropna()
    if len(ratio) < PERSIST_MIN_OBS:
        return None
    m = round(float(ratio.median()))
    if m < 2 or not bool(((ratio - m).abs() <= LOGGING_REL_TOL * m).all()):
        return None
    return m


class IdenticalComponents(Rule):
    """Pairs of logged loss components equal to the printed precision on most end-of-run steps."""

    topic = "logging"
    # at chance every contrastive loss equals ln(B): the warning form is a symptom, only the error
    # form (identical while learning) points at logging
    emits = (Emit("components_identical", ("warning", "error"), "logging_misstates_loss", 1, implicates_at=("error",)),)
    needs = (("loss_split", "value"),)
    thresholds = {"IDENTICAL_ATOL": IDENTICAL_ATOL, "IDENTICAL_SHARE": IDENTICAL_SHARE}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        comps = [c for c in targets(df, "loss_split", "value") if c != "total"]
        return [f for i, a in enumerate(comps) for b in comps[i + 1:] for f in self._pair(df, ctx, a, b)]

    def _pair(self, df: pd.DataFrame, ctx: RunContext, a: str, b: str) -> list[Finding]:
        sa, sb = window(series(df, "loss_split", a, "value")), window(series(df, "loss_split", b, "value"))
        both = pd.concat([sa, sb], axis=1, join="inner").dropna()
        if both.empty:
            return []
        same = (both.iloc[:, 0] - both.iloc[:, 1]).abs() <= IDENTICAL_ATOL
        if float(same.mean()) < IDENTICAL_SHARE:
            return []
        chance = series(df, "loss_split", a, "chance")
        ln_b = float(chance.iloc[-1]) if len(chance) else float("nan")
        chance_level = at_chance(float(both.iloc[:, 0].mean()), ln_b)
        why = (f"both sit at ln(B) = {ln_b:.4f}: with uniform logits every contrastive loss equals ln(B) "
               "whatever its dimension, so they agree because the model is at chance, not because one is a copy"
               if chance_level else
               "they are not at chance, so identical values point at one value logged under two names")
        return [Finding(
            "components_identical", "warning" if chance_level else "error", ctx.name,
            f"{a} and {b} agree to {IDENTICAL_ATOL:g} on {float(same.mean()):.0%} of the last {len(both)} steps; "
            f"{why}.",
            {"components": [a, b], "share_identical": rnd(same.mean(), 3), "window_steps": span(both.iloc[:, 0]),
             "mean_value": rnd(both.iloc[:, 0].mean()), "chance_ln_B": rnd(ln_b)},
            "Log each component from its own computation; check the loss-at-chance finding first." if chance_level
            else "Check the logging code: one component is reported under another's name.", f"{a}~{b}")]


# The reported loss is a constant multiple of the observed logits' own cross-entropy when their ratio
# agrees to float rounding of a batch mean across steps (relative spread < SCALED_SPREAD); a factor
# that far from 1 (SCALED_MIN_OFF) is no rounding. Any other loss on these logits (label smoothing,
# another temperature, extra terms, other logits) does not keep a constant ratio from step to step.
SCALED_SPREAD, SCALED_MIN_OFF, SCALED_MIN_STEPS = 1e-3, 0.01, 3


class LoggedScaled(Rule):
    """The reported contrastive loss = c x the cross-entropy of the logits passed with it, c != 1 (a loss
    divided for gradient accumulation and logged as divided, a sum over devices, ...)."""

    topic = "logging"
    emits = (Emit("loss_logged_scaled", ("error",), "logging_misstates_loss", 1),)
    needs = (("contrastive", "loss_diagonal"),)
    thresholds = {"SCALED_SPREAD": SCALED_SPREAD, "SCALED_MIN_OFF": SCALED_MIN_OFF}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        comp = primary_component(df)
        reported = series(df, "loss_split", comp, "value")
        own = series(df, "contrastive", "logits", "loss_diagonal")
        both = pd.concat({"reported": reported, "own": own}, axis=1).dropna()
        both = both[(both["own"].abs() > 1e-6) & both.abs().lt(float("inf")).all(axis=1)]
        if len(both) < SCALED_MIN_STEPS:
            return []
        ratio = both["reported"] / both["own"]
        c = float(ratio.median())
        spread = float((ratio.max() - ratio.min()) / abs(c)) if c else float("inf")
        if spread >= SCALED_SPREAD or abs(c - 1.0) <= SCALED_MIN_OFF:
            return []
        ev = {"component": comp, "factor": rnd(c, 6), "relative_spread": rnd(spread, 8), "steps_compared": len(both),
              "reported_first": rnd(both["reported"].iloc[0]), "own_first": rnd(both["own"].iloc[0]),
              "steps": span(both["own"])}
        return [Finding(
            "loss_logged_scaled", "error", ctx.name,
            f"the reported {comp} is {c:.4g} x the symmetric cross-entropy of the logits passed with it on all "
            f"{len(both)} steps compared (step {ev['steps'][0]}: {ev['reported_first']:.4f} vs "
            f"{ev['own_first']:.4f}): the logged value is scaled, so every reading of it against ln(B) is off by that "
            "factor (a loss divided for gradient accumulation and logged as divided, or summed over devices).", ev,
            "Log the loss before dividing it for accumulation (or multiply back); pass observe the value of the "
            "objective itself.", comp)]


# A reported loss that is an aggregate of the per-step cross-entropies of the logits observed with it.
# Running mean since the first step and an exponential moving average are deterministic functions of those
# values: they agree to float rounding (AGG_REL_TOL) or not at all. Either only matters where it differs
# from the step's own value by more than SCALED_MIN_OFF on some step, over AGG_MIN_STEPS consecutive steps.
AGG_REL_TOL, AGG_MIN_STEPS = 1e-3, 8

# One logged quantity in two scales: on some steps the reported loss IS the cross-entropy of the logits passed with
# it (equal to SCALED_MIN_OFF: the same logits give the same value, so a match to 1% says what the log is), on
# others it is off by a factor of TWO_SCALES_FACTOR or more either way. Factor 2 is what moves a reading across the
# learned line (a loss below half of ln B, `definitions.LEARNED_LOSS_FRACTION`): an offset that large changes the
# verdict. Each side on PERSIST_MIN_OBS steps. (A constant factor on every step is `loss_logged_scaled`'s; an
# integer sum over micro-batches `loss_logged_summed`'s: neither has steps that match. A meter restarted per epoch
# equals the step's loss at each restart and lags it after: `loss_logged_running_mean`'s, a warning, not this.)
TWO_SCALES_FACTOR = 2.0


class LoggedTwoScales(Rule):
    """The reported loss equals the logits' own cross-entropy on some steps and is several times it on others: a
    value left scaled (a loss scale, an accumulation divisor) on the steps where only another branch restores it."""

    topic = "logging"
    emits = (Emit("loss_logged_two_scales", ("error",), "logging_misstates_loss", 1),)
    needs = (("contrastive", "loss_diagonal"), ("loss_split", "value"))
    thresholds = {"TWO_SCALES_FACTOR": TWO_SCALES_FACTOR, "SCALED_MIN_OFF": SCALED_MIN_OFF,
                  "PERSIST_MIN_OBS": PERSIST_MIN_OBS, "AGG_REL_TOL": AGG_REL_TOL}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        comp = primary_component(df)
        both = pd.concat({"reported": series(df, "loss_split", comp, "value"),
                          "own": series(df, "contrastive", "logits", "loss_diagonal")}, axis=1).dropna()
        both = both[(both["own"].abs() > 1e-6) & both.abs().lt(float("inf")).all(axis=1)]
        if len(both) >= AGG_MIN_STEPS and _restarts(both) is not None:
            return []  # a meter restarted per window: its value equals the step's at each restart (the aggregate's)
        ratio = both["reported"] / both["own"]
        same = ratio[(ratio - 1.0).abs() <= SCALED_MIN_OFF]
        off = ratio[(ratio >= TWO_SCALES_FACTOR) | (ratio <= 1.0 / TWO_SCALES_FACTOR)]
        if len(same) < PERSIST_MIN_OBS or len(off) < PERSIST_MIN_OBS:
            return []
        ev = {"component": comp, "steps_compared": len(ratio), "steps_equal": len(same), "steps_off": len(off),
              "factor_off_median": rnd(float(off.median()), 4), "factor_off_min": rnd(float(off.min()), 4),
              "factor_off_max": rnd(float(off.max()), 4), "first_equal_step": int(same.index[0]),
              "first_off_step": int(off.index[0]), "steps": span(ratio)}
        return [Finding(
            "loss_logged_two_scales", "error", ctx.name,
            f"the reported {comp} equals the cross-entropy of the logits passed with it on {len(same)} of "
            f"{len(ratio)} steps (to {SCALED_MIN_OFF:.0%}) and is {ev['factor_off_median']:.4g} x it (from "
            f"{ev['factor_off_min']:.4g} to {ev['factor_off_max']:.4g}) on {len(off)} others (first at step "
            f"{ev['first_off_step']}): one value logged in two scales, left scaled (a loss scale, an accumulation "
            "divisor) on the steps where only another branch restores it. Readings of the logged curve against "
            "ln(B) are off on those steps.", ev,
            "Log the objective on every step (unscale or multiply back before logging, not only where the optimizer "
            "steps); pass observe that value.", comp)]


# A sum over k micro-batches (or devices) logged instead of their mean, with the logits of one of them
# observed: the ratio reported / own scatters around the integer k as one micro-batch's cross-entropy
# scatters around the mean of k (a few % at batch 32-256). Its median within SUM_INT_TOL of k >= 2 and its
# interquartile range under SUM_IQR of k; any other extra term or temperature has no reason to sit at an
# integer. A ratio that is constant to rounding is `loss_logged_scaled`'s. The ratio of one micro-batch's loss to
# the mean of k scatters more as the loss falls (at batch 16 and 0.05 ln B its interquartile range passes 0.4 k and
# the median of the ratios drifts with its heavy tail), so the ratio of the two means over the steps is read too:
# it converges to k as the scatter averages out, and holds when it is within SUM_INT_TOL x k of k with a standard
# error (delta method) under SUM_INT_TOL x k, i.e. k told apart from k +- 1 for k up to ~16.
SUM_INT_TOL, SUM_IQR = 0.03, 0.2


def _consecutive(both: pd.DataFrame) -> pd.DataFrame:
    """The first run of consecutive steps (a running mean needs every step from the first)."""
    steps = both.index.to_numpy()
    breaks = [i for i in range(1, len(steps)) if steps[i] != steps[i - 1] + 1]
    return both.iloc[: breaks[0]] if breaks else both


def _restarts(after: pd.DataFrame) -> list[int] | None:
    """Steps at which `after` (consecutive steps) restarts a running mean of the step losses, when every reported
    value is the mean since the last restart to AGG_REL_TOL (a restart: the value is that step's own loss);
    None when some value is neither (or the steps are not consecutive)."""
    steps, rep, own = after.index.to_numpy(), after["reported"].to_numpy(), after["own"].to_numpy()
    if len(steps) > 1 and (steps[1:] - steps[:-1] != 1).any():
        return None
    starts, total, count = [], 0.0, 0
    for i in range(len(steps)):
        mean = (total + own[i]) / (count + 1)
        if count and abs(rep[i] - mean) < AGG_REL_TOL * abs(mean):
            total, count = total + own[i], count + 1
        elif abs(rep[i] - own[i]) < AGG_REL_TOL * abs(own[i]):  # a restart: the mean of this one step
            starts, total, count = starts + [int(steps[i])], own[i], 1
        else:
            return None
    return starts


class LoggedAggregate(Rule):
    """The reported contrastive loss is a running mean, a moving average or a micro-batch sum of the
    cross-entropies of the logits passed with it, not the step's own value."""

    topic = "logging"
    emits = (Emit("loss_logged_running_mean", ("warning", "error"), "logging_misstates_loss", 1),
             Emit("loss_logged_smoothed", ("warning",), "logging_misstates_loss", 1),
             Emit("loss_logged_summed", ("error",), "logging_misstates_loss", 1),
             Emit("loss_logged_divided", ("error",), "logging_misstates_loss", 1))
    needs = (("contrastive", "loss_diagonal"),)
    thresholds = {"AGG_REL_TOL": AGG_REL_TOL, "AGG_MIN_STEPS": AGG_MIN_STEPS, "SUM_INT_TOL": SUM_INT_TOL,
                  "SUM_IQR": SUM_IQR}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        comp = primary_component(df)
        both = pd.concat({"reported": series(df, "loss_split", comp, "value"),
                          "own": series(df, "contrastive", "logits", "loss_diagonal")}, axis=1).dropna()
        both = both[(both["own"].abs() > 1e-6) & both.abs().lt(float("inf")).all(axis=1)]
        if len(both) < AGG_MIN_STEPS:
            return []
        off = float(((both["reported"] - both["own"]).abs() / both["own"].abs()).max())
        if off <= SCALED_MIN_OFF:
            return []
        ev = {"component": comp, "steps": span(both["own"]), "max_relative_gap": rnd(off, 4)}
        run = _consecutive(both)
        for finding in (self._running_mean(run, comp, ev, ctx, both), self._smoothed(run, comp, ev, ctx),
                        self._summed(both, comp, ev, ctx), self._divided(both, comp, ev, ctx)):
            if finding is not None:
                return [finding]
        return []

    @staticmethod
    def _running_mean(run: pd.DataFrame, comp: str, ev: dict, ctx: RunContext, both: pd.DataFrame) -> Finding | None:
        # the pattern is read on its longest prefix from the first step: a logged value that equals the mean of
        # the step losses since step 0 to AGG_REL_TOL on AGG_MIN_STEPS noisy steps is computed as that mean (a
        # meter), whatever it does later. Where it breaks, the log either goes on as a mean restarted at that step
        # and later ones (a meter reset per window or epoch: its lag is bounded by the window, a warning as for a
        # moving average), or is no such mean (a sum reset apart from its count: error, with the step it broke at).
        # The finding goes when, after the break, the logged value is the step's own (the log was fixed).
        # A meter may also carry a constant factor: a per-sample sum (loss x batch size) divided by the number of
        # batches reads batch size x the mean. The first step's mean is that step's own loss, so the first reading
        # gives the factor; the same tolerances then hold the pattern on every step after it or reject it.
        scale = float(run["reported"].iloc[0] / run["own"].iloc[0])
        scale = scale if math.isfinite(scale) and scale > 0 and abs(scale - 1.0) > SCALED_MIN_OFF else 1.0
        if scale != 1.0:
            run = run.assign(reported=run["reported"] / scale)
            both = both.assign(reported=both["reported"] / scale)
        mean = run["own"].expanding().mean()
        rel = ((run["reported"] - mean).abs() / mean.abs()).to_numpy()
        held = int((rel >= AGG_REL_TOL).argmax()) if (rel >= AGG_REL_TOL).any() else len(run)
        if held < AGG_MIN_STEPS:
            return None
        pre, mean = run.iloc[:held], mean.iloc[:held]
        if scale == 1.0 and float(((mean - pre["own"]).abs() / pre["own"].abs()).max()) <= SCALED_MIN_OFF:
            return None  # the mean never differed from the step's own value here: nothing tells them apart
        after = both[both.index > pre.index[-1]]
        gap_after = (after["reported"] - after["own"]).abs() / after["own"].abs()
        if len(after) and float(gap_after.median()) <= SCALED_MIN_OFF:
            return None
        err, last = float(rel[:held].max()), pre.iloc[-1]
        restarts = _restarts(after) if len(after) else None
        ev = {**ev, "relative_error": rnd(err, 8), "reported_end": rnd(last["reported"] * scale),
              "own_end": rnd(last["own"]), "held_steps": span(pre["own"]),
              "broke_at": int(after.index[0]) if len(after) else None, "factor": rnd(scale, 6)}
        times = f"{scale:.4g} x " if scale != 1.0 else ""
        said = (f"the reported {comp} is {times}the mean of the logits' own cross-entropy over every step since step "
                f"{int(pre.index[0])} (agrees to {err:.1g} on {held} consecutive steps): at step {int(pre.index[-1])} "
                f"it reads {last['reported'] * scale:.4f} while the step's own loss is {last['own']:.4f}.")
        fix = "Pass observe the step's own loss (loss.item()), not a meter's global average."
        if scale != 1.0:
            said += (f" The factor {scale:.4g} (the first step's reading over its own loss) is no averaging: a sum "
                     "per sample divided by a count of batches, or a count that is not the sum's, reads that many "
                     "times the objective, so every reading of the curve against ln(B) is off by it.")
            fix = "Divide the meter's sum by the count it sums over (samples for a per-sample sum); " + fix
        if restarts:
            starts = [int(pre.index[0])] + restarts
            window_max = max(b - a for a, b in zip(starts, starts[1:] + [int(both.index[-1]) + 1]))
            return Finding(
                "loss_logged_running_mean", "warning" if scale == 1.0 else "error", ctx.name,
                f"{said} From step {restarts[0]} on it is the same mean restarted (at steps "
                f"{', '.join(map(str, restarts[:6]))}{', ...' if len(restarts) > 6 else ''}): a meter reset per window "
                f"or epoch. The curve lags the run by up to {window_max} steps, so a run that stopped learning or "
                "diverged shows it late.", {**ev, "restarts": restarts[:20], "window_max": window_max}, fix, comp)
        broke = (f" From step {int(after.index[0])} on it is no longer that mean, nor one restarted there (it reads "
                 f"{after['reported'].iloc[0] * scale:.4f}, the step's own loss {after['own'].iloc[0]:.4f}): its sum "
                 "and its count went out of step (a sum never reset while its count restarts), so the curve is no "
                 "loss at all." if len(after) else "")
        return Finding(
            "loss_logged_running_mean", "error", ctx.name,
            f"{said} A mean since the start lags further behind every step: the curve and every reading of it "
            "against ln(B) describe the past." + broke, ev, fix, comp)

    @staticmethod
    def _smoothed(run: pd.DataFrame, comp: str, ev: dict, ctx: RunContext) -> Finding | None:
        if len(run) < AGG_MIN_STEPS:
            return None
        r, o = run["reported"].to_numpy(), run["own"].to_numpy()
        dr, gap = r[1:] - r[:-1], o[1:] - r[:-1]
        denom = float((gap * gap).sum())
        if denom <= 0:
            return None
        alpha = float((dr * gap).sum() / denom)
        if not 1e-3 < alpha < 0.999:
            return None
        err = float((abs(r[1:] - (r[:-1] + alpha * gap)) / abs(o[1:])).max())
        if err >= AGG_REL_TOL:
            return None
        return Finding(
            "loss_logged_smoothed", "warning", ctx.name,
            f"the reported {comp} is an exponential moving average of the logits' own cross-entropy (weight "
            f"{alpha:.3g} on each new step; agrees to {err:.1g} on {len(run)} consecutive steps): the curve lags the "
            "run by about 1/weight steps, so a run that stopped learning or diverged shows it late.",
            {**ev, "alpha": rnd(alpha, 6), "relative_error": rnd(err, 8)},
            "Pass observe the step's own loss and smooth only for display.", comp)

    @staticmethod
    def _summed(both: pd.DataFrame, comp: str, ev: dict, ctx: RunContext) -> Finding | None:
        got = integer_factor(both["reported"], both["own"])
        if got is None:
            return None
        c, k, iqr = got
        return Finding(
            "loss_logged_summed", "error", ctx.name,
            f"the reported {comp} is {c:.3g} x the cross-entropy of the logits passed with it (over "
            f"{len(both)} steps; per-step interquartile range {iqr:.2g}), scattering around the integer {k} as one "
            f"batch's loss scatters around the mean of {k}: a sum over {k} micro-batches (or devices) is logged "
            f"instead of their mean, so the curve reads {k}x the objective and every reading against ln(B) is off "
            f"by {k}.",
            {**ev, "factor_median": rnd(c, 4), "k": k, "ratio_iqr": rnd(iqr, 4)},
            f"Log the mean over the {k} micro-batches (sum of loss / {k}), the value the optimizer minimises.", comp)

    @staticmethod
    def _divided(both: pd.DataFrame, comp: str, ev: dict, ctx: RunContext) -> Finding | None:
        # the mirror of a sum: the logits' own loss is k x the logged one, scattering as one micro-batch's loss
        # around the mean of k (a mean over k micro-batches divided by k once more, or the last micro-batch's loss
        # logged as divided for accumulation)
        got = integer_factor(both["own"], both["reported"])
        if got is None:
            return None
        c, k, iqr = got
        return Finding(
            "loss_logged_divided", "error", ctx.name,
            f"the reported {comp} is 1/{c:.3g} of the cross-entropy of the logits passed with it (over {len(both)} "
            f"steps; per-step interquartile range of the inverse ratio {iqr:.2g}), scattering around 1/{k} as the "
            f"mean of {k} micro-batches' losses scatters around one of them: the logged value is divided by {k} once "
            f"more than the objective (a loss divided for accumulation, logged as divided, or a mean divided again), "
            f"so the curve reads 1/{k} of the objective and every reading against ln(B) is off by {k}.",
            {**ev, "factor_median": rnd(1.0 / c, 4), "k": k, "inverse_ratio_iqr": rnd(iqr, 4)},
            f"Log the mean of the micro-batch losses once (multiply back by {k} where the logged value was divided "
            "for accumulation); pass observe the value the optimizer minimises.", comp)


def integer_factor(num: pd.Series, den: pd.Series) -> tuple[float, int, float] | None:
    """(c, k, interquartile range of num/den) where num / den scatters around an integer k >= 2 (see SUM_INT_TOL):
    the median of the ratios within SUM_INT_TOL x k of k with their IQR under SUM_IQR x k, else the ratio of the
    means with its standard error under SUM_INT_TOL x k. None otherwise, or where the ratio is constant to rounding
    (`loss_logged_scaled`'s)."""
    ratio = num / den
    c = float(ratio.median())
    iqr = float(ratio.quantile(0.75) - ratio.quantile(0.25))
    spread = float((ratio.max() - ratio.min()) / abs(c)) if c else float("inf")
    if spread < SCALED_SPREAD:
        return None
    k = round(c)
    if k < 2 or abs(c - k) > SUM_INT_TOL * k or iqr > SUM_IQR * k:  # the median of the ratios; else their means
        den_mean = float(den.mean())
        c = float(num.mean()) / den_mean
        se = float((num - c * den).std()) / math.sqrt(len(num)) / abs(den_mean)
        k = round(c)
        if k < 2 or abs(c - k) > SUM_INT_TOL * k or not se < SUM_INT_TOL * k:
            return None
    return c, k, iqr


# The logged loss against the loss of the logits it is logged with, as trends: over the steps both are recorded,
# the logits' own cross-entropy falls (`persistence.falling`: last third below first third by IMPROVEMENT_SE
# standard errors, counted from ln(B) down) and ends learned (`definitions.learned`: below half of ln B), while the
# logged loss does not fall by that test, and its relative change exceeds the logits' by TRACK_SE standard errors of
# the difference (a noisy log of the same curve falls as far, relatively, and is not "not falling" by that much).
# Any loss computed from these logits that the optimizer minimises falls when their cross-entropy falls that far:
# a constant factor, label smoothing, SigLIP's sigmoid loss on the same logits, an MRL sum or a total with falling
# extra terms all fall together with it. "Ends above ln(B) while the logits' own loss is below it" alone is not
# the condition: an MRL sum or a total with extra terms legitimately ends above ln(B) (summed/scaled logs are the
# rules above).
TRACK_SE = 2.0


def _thirds(v: pd.Series, ceiling: float | None = None) -> tuple[float, float, float, float]:
    """(first-third mean counted at most `ceiling`, last-third mean, relative change, its standard error)."""
    n = len(v) // 3
    first, last = v.iloc[:n], v.iloc[-n:]
    start = float(first.mean()) if ceiling is None else min(float(first.mean()), ceiling)
    se = math.sqrt(float(first.var()) / n + float(last.var()) / n)
    return start, float(last.mean()), (float(last.mean()) - start) / abs(start), se / abs(start)


class LoggedNotTracking(Rule):
    """The reported loss does not fall while the cross-entropy of the logits observed with it falls to learned:
    the logged value is not the loss of these logits (a running sum never reset, a stale or accumulated value)."""

    topic = "logging"
    emits = (Emit("loss_logged_not_tracking", ("error",), "logging_misstates_loss", 1),)
    needs = (("contrastive", "loss_diagonal"), ("contrastive", "loss_target"), ("loss_split", "value"))
    thresholds = {"TRACK_SE": TRACK_SE, "PERSIST_MIN_OBS": PERSIST_MIN_OBS, "IMPROVEMENT_SE": IMPROVEMENT_SE}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        comp = primary_component(df)
        # the logits' own loss: against the diagonal (square logits), else against the targets passed with them
        # (rows scored against more candidates than rows, e.g. features gathered from other ranks)
        own = series(df, "contrastive", "logits", "loss_diagonal")
        own = own if len(own) else series(df, "contrastive", "logits", "loss_target")
        both = pd.concat({"reported": series(df, "loss_split", comp, "value"), "own": own}, axis=1).dropna()
        both = both[both.abs().lt(float("inf")).all(axis=1) & (both["reported"].abs() > 1e-12)]
        # alarm gate: PERSIST_MIN_OBS observations (two per third at least) with the trends disagreeing over
        # them; a finding that holds is worth the alarm at once: the weights need not move for a log to be wrong
        if len(both) < PERSIST_MIN_OBS:
            return []
        cols = finite(series(df, "contrastive", "logits", "cols"))
        chance = finite(series(df, "loss_split", comp, "chance"))
        ln_b = math.log(float(cols.iloc[-1])) if len(cols) and cols.iloc[-1] > 1 else (
            float(chance.iloc[-1]) if len(chance) else float("nan"))
        own_end = float(window(both["own"]).mean())
        if not (math.isfinite(ln_b) and learned(own_end, ln_b) and falling(both["own"], ceiling=ln_b)):
            return []
        if falling(both["reported"]):
            return []
        o0, o1, o_rel, o_se = _thirds(both["own"], ln_b)
        r0, r1, r_rel, r_se = _thirds(both["reported"])
        z = (r_rel - o_rel) / max(math.hypot(r_se, o_se), 1e-12)
        if z <= TRACK_SE:
            return []
        rep_end = float(window(both["reported"]).mean())
        steps = span(both["own"])
        ev = {"component": comp, "steps": steps, "steps_compared": len(both), "chance_ln_B": rnd(ln_b),
              "own_first_third": rnd(o0), "own_last_third": rnd(o1), "own_relative_change": rnd(o_rel),
              "reported_first_third": rnd(r0), "reported_last_third": rnd(r1), "reported_relative_change": rnd(r_rel),
              "disagreement_se": rnd(z, 2), "own_end": rnd(own_end), "reported_end": rnd(rep_end)}
        return [Finding(
            "loss_logged_not_tracking", "error", ctx.name,
            f"the logged {comp} does not track the loss of the logits it is logged with: over steps {steps[0]}-"
            f"{steps[1]} ({len(both)} compared; means of the first and last thirds) the logits' own cross-entropy fell "
            f"from {o0:.4f} to {o1:.4f} (ends "
            f"at {own_end:.4f} = {own_end / ln_b:.2f} ln B: learned) while the logged value went from {r0:.4f} to "
            f"{r1:.4f} ({r_rel:+.0%}; the two changes {z:.1f} standard errors apart). The model learns; every reading "
            "of the logged loss (learned, at chance, diverging) is about a number the optimizer does not minimise.",
            ev, "Pass observe the loss you call backward on this step (loss.item()); a running sum for display must "
            "be reset together with its count.", comp)]
