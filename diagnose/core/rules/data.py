"""Rules on the data itself: do the training pairs carry a signal to learn?

Reads the `data_signal` records (diagnose/engine/datasignal.py: a closed-form linear map fitted on part of
a sample of training pairs, scored by held-out retrieval with a permutation test). They are measured
before or beside training, so the finding separates "the captions do not match the images" from
"the pairs carry signal that the model fails to learn", which a collapsed or at-chance loss alone
cannot tell apart.
"""

from __future__ import annotations

import math

import pandas as pd

from ..definitions import CHANCE_REL_TOL, at_chance, learned, left_chance, relative_gap
from ..findings import Finding

# the records `diagnose.engine.datasignal` writes, and the sizes of its test (diagnose/core/signal_check.py:
# torch- and pandas-free, so the CLI declares its options without loading either)
from ..signal_check import ALPHA, METRICS, MIN_TEST, PERMUTATIONS, PROBE, TARGET  # noqa: F401
from .base import Emit, Rule, RunContext, end_loss, finite, primary_component, rnd, series, span
from .gradients import SETTLED_CUMULATIVE_UPDATE, cumulative_updates
from .persistence import IMPROVEMENT_SE, gap_to_chance, loss_falling, stuck
from .representation import COLLAPSE_COSINE, IDENTICAL_ROWS_COSINE


def _latest(df: pd.DataFrame) -> dict[str, float]:
    out = {}
    for metric in METRICS:
        s = series(df, PROBE, TARGET, metric)
        if s.empty:
            return {}
        out[metric] = float(s.iloc[-1])
    return out


class NoDataSignal(Rule):
    """Held-out linear retrieval of captions from images no better than re-paired captions."""

    topic = "data"
    emits = (Emit("no_data_signal", ("warning", "error"), "misaligned_pairs", 1),
             Emit("data_signal_present", ("info",)))
    needs = ((PROBE, "p_value"),)
    thresholds = {"ALPHA": ALPHA}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        m = _latest(df)
        if not m or not math.isfinite(m["p_value"]):  # non-finite inputs: nonfinite_values says so
            return []
        loss, ln_b = end_loss(df)
        ev = {"heldout_r@1": rnd(m["r@1"]), "chance@1": rnd(m["chance@1"], 6), "hits": int(m["hits"]),
              "p_value": rnd(m["p_value"]), "alpha": ALPHA, "detectable_r@1": rnd(m["detectable_r@1"]),
              "n_test": int(m["n_test"]), "loss_clip_mean": rnd(loss), "chance_ln_B": rnd(ln_b)}
        probe = (f"a linear map fitted in closed form on part of a sample of the pairs retrieves the held-out "
                 f"captions with R@1 {m['r@1']:.4f} vs chance {m['chance@1']:.4f} ({int(m['n_test'])} held-out "
                 f"pairs, permutation p = {m['p_value']:.3g})")
        if m["significant"] >= 0.5:
            if not math.isfinite(loss):  # no training observed (the datasignal command, a watch before training)
                return [Finding("data_signal_present", "info", ctx.name, f"The pairs carry signal: {probe}.", ev,
                                "If a model trained on these pairs stays at chance, the cause is the model or its "
                                "optimisation, not the pairing.", TARGET)]
            if not (at_chance(loss, ln_b) or relative_gap(loss, ln_b) > 0):
                return []  # signal, and the model is learning it: nothing to add
            return [Finding(
                "data_signal_present", "info", ctx.name,
                f"The pairs carry signal: {probe}. The data is not the reason the loss sits at chance; the model or "
                "its optimisation fails to learn a signal that a linear map finds.", ev,
                "Look at the model/optimisation findings (collapse, update sizes, gradients).", TARGET)]
        learning = math.isfinite(loss) and left_chance(loss, ln_b)
        severity = "warning" if learning else "error"
        tail = ("The model's loss nevertheless left chance, so whatever it learns is not linear in the pooled features "
                "(or the sample is too small to show it)." if learning else
                "There is nothing for the model to learn: captions do not describe their images.")
        return [Finding(
            "no_data_signal", severity, ctx.name,
            f"No signal in the pairs: {probe}; an R@1 of {m['detectable_r@1']:.4f} would have been detected. "
            + tail, ev,
            "Check the pairing in the data pipeline: print a few (image id, caption) pairs of a training batch, check "
            "that shuffling/sharding applies the same permutation to images and captions, and that the features "
            "describe the same items.", TARGET)]


# Matching pairs give the paired CKA a margin over the re-paired one from the first step, through random
# towers; a margin not above IMPROVEMENT_SE standard errors over at least PAIRS_MIN_OBS readable observations
# is no shared structure. Readable: spread-out embeddings, or collapsed ones (cosine >= COLLAPSE_COSINE) while
# the weights are still within their own norm of where they started (summed update/param below
# SETTLED_CUMULATIVE_UPDATE). Centred CKA ignores the shared mean and the scale, so rows crowded around one
# vector still carry their inputs' structure through towers that have barely moved (pairs that do not match
# pull the rows together with small steps: 9% of the weights' norm in 80 steps, cosine 0.97-0.99); a
# collapse after the weights moved by their norm is left out: a too-high lr erases the structure whatever
# the data (an open_clip run at lr 0.3 collapsed after its first step, its next eleven readings showed no
# margin and the data was blamed for the lr). Embeddings identical from the start give no reading (NaN);
# with fewer readable steps, the first observation's permutation test (probes.pairs_first) is read instead.
PAIRS_MIN_OBS = 6
# A reading that includes collapsed steps must show the margin small, not only not above zero: the residual
# around the shared vector is a small part of each row and its paired CKA is noisier per step (a healthy
# open_clip run at batch 16, cosine 0.99 throughout, read a margin of 0.022 +- 0.025 over its first 10 steps
# and 0.05-0.07 from step 15 on). Its upper bound (mean + IMPROVEMENT_SE standard errors) must lie below the
# smallest margin the first six spread-out steps of 35 healthy runs of five families showed.
HEALTHY_MIN_MARGIN = 0.04
# The margin of matching pairs is there from the first step (the inputs' shared structure through random towers);
# a margin that grows only later can be learned: a fixed wrong pairing (captions re-paired by one permutation for
# the whole run: files listed in another order than the captions) is a set of arbitrary labels the towers memorise,
# slowly, long before the loss leaves chance. So the reading is also taken over the first PAIRS_EARLY_OBS readable
# observations alone; no margin there is the finding even when the whole run's mean shows one.
PAIRS_EARLY_OBS = 20


def _readable_margins(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per-step paired - re-paired CKA on the readable steps (see above), and which of them were collapsed."""
    paired, null = series(df, "contrastive", "pairs", "cka"), series(df, "contrastive", "pairs", "cka_null")
    diff = (paired - null.reindex(paired.index)).dropna()
    if diff.empty:
        return diff, pd.Series(False, index=diff.index)
    collapsed = pd.Series(False, index=diff.index)
    copies = pd.Series(False, index=diff.index)
    for side in ("image", "text"):
        cos = series(df, "collapse", side, "cosine_mean")
        if len(cos):
            at = cos.reindex(diff.index, method="ffill")
            collapsed |= (at >= COLLAPSE_COSINE).to_numpy()
            copies |= (at >= IDENTICAL_ROWS_COSINE).to_numpy()
    # rows that are copies of each other (a tower that discards its input) carry no structure to compare, paired or
    # re-paired: their margin is 0 whatever the pairing, so those steps read nothing about the pairs
    diff, collapsed = diff[~copies], collapsed[~copies]
    summed = cumulative_updates(df)
    moved = (summed.reindex(diff.index, method="ffill").fillna(0.0) >= SETTLED_CUMULATIVE_UPDATE if len(summed)
             else pd.Series(False, index=diff.index))
    keep = ~collapsed | ~moved
    return diff[keep], collapsed[keep]


def _window(margins: pd.Series) -> tuple[float, float]:
    return float(margins.mean()), float(margins.std()) / math.sqrt(len(margins))


def _moved(df: pd.DataFrame, start: int, stop: int) -> float:
    """The weights' movement between the observations at steps `start` and `stop`: the update/param of the steps
    in between, summed (steps not measured count at the mean of the measured ones there, or the last before)."""
    up = finite(series(df, "gradient_flow.model", "model", "update_to_param"))
    inside = up[(up.index >= start) & (up.index < stop)]
    if inside.empty:
        inside = up[up.index < stop].iloc[-1:]
    return float(inside.mean()) * (stop - start) if len(inside) else math.nan


def _pairing_broke(df: pd.DataFrame, diff: pd.Series) -> dict | None:
    """A pairing that was right and then broke (a cache of the first epoch's batches read back under the next
    epoch's shuffle): the last PAIRS_MIN_OBS readable margins before some observation show the pairs' margin (over
    IMPROVEMENT_SE standard errors, at least HEALTHY_MIN_MARGIN, and not below the first PAIRS_MIN_OBS readings'
    margin by IMPROVEMENT_SE standard errors: it held its level up to there), the first PAIRS_MIN_OBS after it and
    every one to the end show none, the drop is over IMPROVEMENT_SE standard errors, and across it the weights moved
    less than over the window before it, in which the margin held: the model hardly changed there, so what changed
    is the pairs. A model that loses its structure (a too-high lr) loses it by moving; a margin that fades slowly has no
    such step. The largest drop is the break."""
    best = None
    m0, s0 = _window(diff.iloc[:PAIRS_MIN_OBS])  # the margin matching pairs show from the start
    for k in range(PAIRS_MIN_OBS, len(diff) - PAIRS_MIN_OBS + 1):
        before, after, rest = diff.iloc[k - PAIRS_MIN_OBS:k], diff.iloc[k:k + PAIRS_MIN_OBS], diff.iloc[k:]
        (mb, sb), (ma, sa), (mr, sr) = _window(before), _window(after), _window(rest)
        # held its starting level up to the break (not a margin that faded step by step), none after it
        steady = mb + IMPROVEMENT_SE * math.hypot(sb, s0) >= m0
        if not (steady and mb > IMPROVEMENT_SE * sb and mb >= HEALTHY_MIN_MARGIN and ma <= IMPROVEMENT_SE * sa
                and mr <= IMPROVEMENT_SE * sr):
            continue
        z = (mb - ma) / math.hypot(sb, sa) if (sb or sa) else math.inf
        if z > IMPROVEMENT_SE and (best is None or z > best["z"]):
            best = {"z": z, "before": (mb, sb), "rest": (mr, sr), "last": int(diff.index[k - 1]),
                    "first": int(diff.index[k]), "window": span(before)}
    if best is None:
        return None
    # the break is where the margin fell most; only then is it judged by how far the model moved there
    best["across"] = _moved(df, best["last"], best["first"])
    best["held"] = _moved(df, best["window"][0], best["last"])
    return best if best["across"] < best["held"] else None


def _broke_finding(ctx: RunContext, b: dict, paired: pd.Series, null: pd.Series, loss: float, ln_b: float,
                   component: str) -> Finding:
    (mb, sb), (mr, sr) = b["before"], b["rest"]
    ev = {"component": component, "reading": "broke", "steps": [b["first"], int(paired.index.max())],
          "last_step_with_margin": b["last"], "margin_before": rnd(mb), "margin_before_se": rnd(sb),
          "window_before": b["window"], "margin_after_mean": rnd(mr), "margin_after_se": rnd(sr), "z": rnd(b["z"]),
          "moved_across_break": rnd(b["across"], 8), "moved_in_window_before": rnd(b["held"], 8),
          "cka_paired_after": rnd(float(paired[paired.index >= b["first"]].mean())),
          "cka_repaired_after": rnd(float(null[null.index >= b["first"]].mean())),
          "loss_end": rnd(loss), "chance_ln_B": rnd(ln_b)}
    return Finding(
        "pairs_unrelated", "error", ctx.name,
        f"each batch's image and text embeddings shared structure as paired (CKA margin over re-paired captions "
        f"{mb:+.3f} +- {sb:.3f} over steps {b['window'][0]}-{b['window'][1]}) until step {b['last']}, and none from "
        f"step {b['first']} to the end ({mr:+.3f} +- {sr:.3f}), while the weights moved by {b['across']:.2g} of their "
        f"norm across that step, less than the {b['held']:.2g} over which the margin held: the model hardly changed, "
        f"the pairs did. From step {b['first']} on the captions do not belong to their images, and the loss ends at "
        f"{loss:.4f} vs ln(B) = {ln_b:.4f}, not learned.", ev,
        "Look at what changes at that step (a new epoch, a cache or a lookup filled in the first epoch, a second "
        "loader or sampler): images and captions must be shuffled with one permutation, and anything cached by "
        "batch position must be cached by sample id.", "pairs")


class PairsUnrelated(Rule):
    """The image and text embeddings of each batch share no more structure than re-paired rows, while the
    run has not learned: the captions do not belong to their images (or a tower discards its input)."""

    topic = "data"
    # explains false_negatives: copies of a caption are false negatives of a positive that belongs to its image;
    # where the pairs share no structure (captions that are the same few strings whatever the image, e.g. LFS
    # pointer files read as reports), masking the copies leaves a problem at chance all the same, so the copies'
    # cost is not what holds the loss. Copies of captions that do belong to their images (class prompts, grouped
    # captions) keep a pair margin, and this rule stays silent (no false-negatives case of the benchmark fires it)
    emits = (Emit("pairs_unrelated", ("error",), "misaligned_pairs", 2, explains=("false_negatives",)),)
    needs = (("contrastive", "cka"),)
    thresholds = {"PAIRS_MIN_OBS": PAIRS_MIN_OBS, "IMPROVEMENT_SE": IMPROVEMENT_SE, "COLLAPSE_COSINE": COLLAPSE_COSINE,
                  "SETTLED_CUMULATIVE_UPDATE": SETTLED_CUMULATIVE_UPDATE, "HEALTHY_MIN_MARGIN": HEALTHY_MIN_MARGIN,
                  "PAIRS_EARLY_OBS": PAIRS_EARLY_OBS,
                  "CHANCE_REL_TOL": CHANCE_REL_TOL}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        diff, collapsed_at = _readable_margins(df)
        paired, null = series(df, "contrastive", "pairs", "cka"), series(df, "contrastive", "pairs", "cka_null")
        loss, ln_b = end_loss(df)
        if not math.isfinite(loss) or learned(loss, ln_b):
            return []
        if len(diff) < PAIRS_MIN_OBS:
            return self._first_step(df, ctx, loss, ln_b)
        mean, se = float(diff.mean()), float(diff.std()) / math.sqrt(len(diff))
        readable = diff
        later = None  # (the whole run's margin, its SE) where only the early steps show none
        if mean > IMPROVEMENT_SE * se and len(diff) > PAIRS_EARLY_OBS:
            later, diff = (mean, se), diff.iloc[:PAIRS_EARLY_OBS]
            mean, se = float(diff.mean()), float(diff.std()) / math.sqrt(len(diff))
        if mean > IMPROVEMENT_SE * se:  # a margin: unless it vanished at one step that hardly moved the model
            broke = _pairing_broke(df, readable)
            return [] if broke is None else [_broke_finding(ctx, broke, paired, null, loss, ln_b,
                                                            primary_component(df))]
        collapsed = int(collapsed_at.reindex(diff.index).sum())
        if collapsed and mean + IMPROVEMENT_SE * se >= HEALTHY_MIN_MARGIN:  # not shown below a healthy margin
            return self._first_step(df, ctx, loss, ln_b)
        ev = {"component": primary_component(df), "cka_paired_mean": rnd(float(paired.reindex(diff.index).mean())),
              "cka_repaired_mean": rnd(float(null.reindex(diff.index).mean())), "margin_mean": rnd(mean),
              "margin_se": rnd(se), "detectable_margin": rnd(IMPROVEMENT_SE * se), "observations": len(diff),
              "margin_upper_bound": rnd(mean + IMPROVEMENT_SE * se),
              "spread_observations": len(diff) - collapsed, "collapsed_unmoved_observations": collapsed,
              "reading": "per_step", "steps": span(diff), "loss_end": rnd(loss), "chance_ln_B": rnd(ln_b)}
        which = "spread-out embeddings" if not collapsed else (
            f"embeddings spread out or collapsed ({collapsed} steps) before the weights moved by their own norm")
        first, grew = "", ""
        if later is not None:
            ev.update(reading="first_steps", margin_whole_run=rnd(later[0]), margin_whole_run_se=rnd(later[1]))
            first = "the run's first "
            grew = (f" (over the whole run a margin of {later[0]:+.3f} grew: not shared structure, which matching "
                    "pairs show from the first step, but what the towers memorise of a fixed pairing)")
        return [Finding(
            "pairs_unrelated", "error", ctx.name,
            f"over {first}{len(diff)} steps with {which}, each batch's image and text embeddings share no more "
            f"structure as paired than with the captions re-paired at random (linear CKA {ev['cka_paired_mean']:.3f} "
            f"vs {ev['cka_repaired_mean']:.3f}; margin {mean:+.3f}, a margin of {IMPROVEMENT_SE * se:.3f} would have "
            f"shown){grew}, and the loss ends at {loss:.4f} vs ln(B) = {ln_b:.4f}, not learned: the captions do not "
            "belong to their images, or one tower discards its input.", ev,
            "Print a few (image id, caption) pairs of a training batch: check that images and captions are shuffled "
            "with one permutation (one loader, one sampler), sorted the same way, and cached in the same order.",
            "pairs")]

    @staticmethod
    def _first_step(df: pd.DataFrame, ctx: RunContext, loss: float, ln_b: float) -> list[Finding]:
        """No spread-out step to read (embeddings alike from the start, or collapsed): the first observation's
        permutation test (probes.pairs_first), taken before any step, over a run of PAIRS_MIN_OBS observations."""
        z = finite(series(df, "pairs_first", "pairs", "z"))
        seen = series(df, "loss_split", primary_component(df), "value")
        if z.empty or len(seen) < PAIRS_MIN_OBS or float(z.iloc[0]) >= IMPROVEMENT_SE:
            return []
        for side in ("image", "text"):  # rows that are copies from the start: the tower discards its input
            cos = finite(series(df, "collapse", side, "cosine_mean"))
            if len(cos) and float(cos.iloc[0]) >= IDENTICAL_ROWS_COSINE:
                return []
        cka = series(df, "pairs_first", "pairs", "cka")
        null = series(df, "pairs_first", "pairs", "null_mean")
        ev = {"component": primary_component(df), "first_step": int(z.index[0]), "cka_paired": rnd(float(cka.iloc[0])),
              "cka_repaired_mean": rnd(float(null.iloc[0])), "z": rnd(float(z.iloc[0])), "spread_observations": 0,
              "reading": "first_step",
              "loss_end": rnd(loss), "chance_ln_B": rnd(ln_b)}
        return [Finding(
            "pairs_unrelated", "error", ctx.name,
            f"at the first step, before any update, each image and its caption share no more structure than "
            f"re-paired rows (linear CKA {ev['cka_paired']:.3f} vs {ev['cka_repaired_mean']:.3f} over 64 re-pairings, "
            f"z {ev['z']:.2f} < {IMPROVEMENT_SE:g}); no later step has spread-out embeddings to read, and the loss "
            f"ends at {loss:.4f} vs ln(B) = {ln_b:.4f}, not learned: the captions do not belong to their images (a "
            "weak reading alone: random ViT towers carry little of their inputs' structure).", ev,
            "Print a few (image id, caption) pairs of a training batch: check that images and captions are shuffled "
            "with one permutation (one loader, one sampler), sorted the same way, and cached in the same order.",
            "pairs")]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        at_chance_band = gap_to_chance(df, finding.evidence["component"]) > -CHANCE_REL_TOL
        if finding.evidence.get("reading") == "first_step":
            # the first step's reading alone is weak (random ViT towers: z 0.6-1.5 in healthy open_clip and
            # transformers CLIP runs, which sit at chance for 25 steps before they learn): the alarm waits, as
            # the at-chance alarm does, for the loss to stay in the chance band while the weights moved
            return stuck(df, at_chance_band)
        # read per step (spread-out, or collapsed before the weights moved by their norm): matching pairs give
        # the paired CKA its margin from the first step,
        # through random towers, before any learning (35 healthy runs of five families: margins over their
        # first 6 steps 0.04-0.68, but for a batch-16 open_clip run whose cosine stayed at 0.99, which this reading
        # leaves out; none of them ever showed this finding), so no
        # margin over PAIRS_MIN_OBS such steps is not a phase a healthy run passes through: it alarms once the
        # loss stayed in the chance band and did not fall over those steps, without waiting for the weights to
        # move by their own norm (pairs that do not match move them little: 7% in 90 steps)
        first = int(finding.evidence["steps"][0])
        band = at_chance_band[at_chance_band.index >= first]
        return len(band) >= PAIRS_MIN_OBS and bool(band.all()) and not loss_falling(df, first)
