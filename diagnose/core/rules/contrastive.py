"""Rules on the contrastive step read directly (probe ``contrastive``): logits scored against a
different number of candidates than declared, targets that do not point at the pairs, duplicates in
the batch that the loss treats as negatives, and an embedding with no gradient behind it."""

from __future__ import annotations

import pandas as pd

from ..definitions import CHANCE_REL_TOL, HOLDS_LOSS_SHARE, learned, left_chance
from ..findings import Finding
from .attention import mixing_modules
from .base import (
    Emit,
    Rule,
    RunContext,
    end_loss,
    finite,
    grad_is_none,
    primary_component,
    rnd,
    saved_share,
    series,
    span,
    window,
)
from .gradients import unused_temperatures
from .loss_logging import TWO_SCALES_FACTOR
from .persistence import PERSIST_MIN_OBS, falling, held_since, loss_falling, stuck
from .representation import IDENTICAL_ROWS_COSINE

# Targets are the pairs when target i = i for a square logit matrix. A hard target off the diagonal trains its
# row toward a caption that is not its own, and no in-batch recipe puts one there on purpose (duplicates aside,
# which false_negatives reads); a tenth of the rows pulled that way is a tenth of the gradient working against
# the pairs (rows gathered from W ranks that all keep the single-GPU arange: only 1/W of them are right).
TARGETS_ON_DIAGONAL_MIN = 0.9
# A false negative is a duplicate of the positive scored as a negative: the best the loss can do for a
# row with k duplicates is ln(1 + k). The counterfactual (the same logits with those duplicates taken
# out of the negatives) measures what they cost at this step; a gap of a tenth of the loss or more is
# a share of the objective the model can never win, not rounding.
FALSE_NEGATIVE_GAP = 0.1
# Shares of rows with a duplicate in the batch below this are the occasional repeated caption of a
# web dataset; above it, a visible part of every batch competes against copies of its own positive.
DUPLICATE_SHARE_MIN = 0.05
COLLAPSE_COSINE = 0.95  # as in representation.py: beyond it every row looks like every other
# The reported loss "is" a cross-entropy of the observed logits when they agree to float32 rounding of a
# mean over a batch (~1e-6 relative) with room for a loss computed in bf16/fp16 autocast on the same
# logits (~1e-3 would already be a different computation): 1e-4. A reconstruction is told apart from
# another only on steps where the two differ by 10x that; at least MATCH_MIN_STEPS such steps, all of
# them matching, so a coincidence on one step decides nothing.
LOSS_MATCH_REL, MATCH_MIN_STEPS = 1e-4, 3


class LogitsCandidates(Rule):
    """The logits' columns against the candidates declared (batch_size, or candidates when gathered)."""

    topic = "contrastive"
    emits = (Emit("logits_candidates_mismatch", ("warning",), "chance_miscounted", 1),)
    needs = (("contrastive", "cols"),)

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        cols = series(df, "contrastive", "logits", "cols")
        if cols.empty or not ctx.pool:
            return []
        c = int(cols.iloc[-1])
        if c == int(ctx.pool):
            return []
        rows = series(df, "contrastive", "logits", "rows")
        ev = {"logits_cols": c, "logits_rows": int(rows.iloc[-1]) if len(rows) else None,
              "declared_candidates": int(ctx.pool), "batch_size": ctx.batch_size, "steps": span(cols)}
        return [Finding(
            "logits_candidates_mismatch", "warning", ctx.name,
            f"each logits row is scored against {c} candidates, but {ctx.pool} were declared "
            f"(batch_size/candidates): chance is ln({c}), not ln({ctx.pool}), so every at-chance judgement of "
            "this run is made against the wrong value.", ev,
            f"Pass candidates={c} to watch/observe (features gathered across ranks), or check how the logits are "
            "built (a batch split or concatenated).", "logits")]


class TargetsOffDiagonal(Rule):
    """Where the targets point (when given), or the loss of the same logits scored on their diagonal."""

    topic = "contrastive"
    emits = (Emit("targets_off_diagonal", ("error",), "wrong_targets", 1),
             Emit("loss_not_about_pairs", ("error",), "wrong_targets", 2))
    needs = (("contrastive", "rows"),)
    thresholds = {"TARGETS_ON_DIAGONAL_MIN": TARGETS_ON_DIAGONAL_MIN, "CHANCE_REL_TOL": CHANCE_REL_TOL}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        on = finite(series(df, "contrastive", "logits", "target_on_diagonal"))
        rows, cols = series(df, "contrastive", "logits", "rows"), series(df, "contrastive", "logits", "cols")
        square = len(rows) and len(cols) and int(rows.iloc[-1]) == int(cols.iloc[-1])
        if len(on) and square:
            return self._targets(df, ctx, on)
        if not square:
            return self._pairs_elsewhere(df, ctx)
        return self._reconstructed(df, ctx) or self._diagonal(df, ctx)

    def _pairs_elsewhere(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        """Rectangular logits: the targets against the columns that hold each pair's own caption, located by the
        caption's scores against the batch's images (probes.contrastive `pairs_located`, `target_at_pair`)."""
        located = finite(series(df, "contrastive", "logits", "pairs_located"))
        at = finite(series(df, "contrastive", "logits", "target_at_pair"))
        if located.empty or at.empty or float(window(located).mean()) < TARGETS_ON_DIAGONAL_MIN:
            return []  # the pairs' captions are not (all) among the columns: nothing to hold the targets against
        w = window(at)
        if float(w.mean()) >= TARGETS_ON_DIAGONAL_MIN:
            return []
        cols = series(df, "contrastive", "logits", "cols")
        ev = {"target_at_pair": rnd(w.mean()), "pairs_located": rnd(window(located).mean()),
              "candidates_end": int(cols.iloc[-1]) if len(cols) else None, "window_steps": span(w)}
        return [Finding(
            "targets_off_diagonal", "error", ctx.name,
            f"the logits score each row against {ev['candidates_end']} candidates, and each pair's own caption "
            f"is among them (found by its scores against the batch's images on {window(located).mean():.0%} of the "
            f"rows), but only {w.mean():.0%} of the targets point at that column: the loss trains the other rows "
            "toward a caption that is not theirs.", ev,
            "Offset the targets by where the batch's own captions sit among the candidates (after a queue or bank "
            "of earlier captions: arange(B) + len(bank); gathered: arange(B) + rank x B).", "logits")]

    def _reconstructed(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        """Targets not given: the reported loss equals the logits' cross-entropy against column 0 (in one
        direction or both) on every step where that differs from the loss against the diagonal."""
        comp = primary_component(df)
        reported = finite(series(df, "loss_split", comp, "value"))
        parts = {m: finite(series(df, "contrastive", "logits", m))
                 for m in ("loss_i2t", "loss_t2i", "loss_zero_i2t", "loss_zero_t2i")}
        if reported.empty or any(v.empty for v in parts.values()):
            return []
        frame = pd.concat({"reported": reported, **parts}, axis=1).dropna()
        ways = {"symmetric": lambda a, b: 0.5 * (a + b), "image->text": lambda a, b: a, "text->image": lambda a, b: b}
        for way, f in ways.items():
            diag = f(frame["loss_i2t"], frame["loss_t2i"])
            zero = f(frame["loss_zero_i2t"], frame["loss_zero_t2i"])
            apart = (diag - zero).abs() > 10 * LOSS_MATCH_REL * diag.abs()
            if int(apart.sum()) < MATCH_MIN_STEPS:
                continue
            rel = ((frame["reported"] - zero).abs() / zero.abs().clip(lower=1e-12))[apart]
            if float(rel.max()) > LOSS_MATCH_REL:
                continue
            steps = [int(x) for x in rel.index]
            d = diag[apart]
            ev = {"component": comp, "direction": way, "reading": "loss_reconstructed", "steps_compared": len(steps),
                  "first_steps": steps[:5], "max_rel_diff_to_column0_loss": rnd(float(rel.max()), 8),
                  "reported_first": rnd(float(frame["reported"][apart].iloc[0])),
                  "diagonal_loss_first": rnd(float(d.iloc[0]))}
            return [Finding(
                "targets_off_diagonal", "error", ctx.name,
                f"the reported {comp} is the cross-entropy of the observed logits ({way}) with every target at column "
                f"0, to {rel.max():.1g} relative on all {len(steps)} steps compared (step {steps[0]}: "
                f"{ev['reported_first']:.4f}; against the diagonal it would be {ev['diagonal_loss_first']:.4f}): the "
                "loss trains every row toward the batch's first item, not its own pair (MoCo's labels = zeros "
                "on an in-batch matrix).", ev,
                "Use labels = torch.arange(B) for an in-batch (B, B) logit matrix (zeros only fit MoCo's "
                "cat([l_pos, l_neg]) layout); pass targets=labels to observe.", "logits")]
        return []

    def _targets(self, df: pd.DataFrame, ctx: RunContext, on: pd.Series) -> list[Finding]:
        w = window(on)
        if float(w.mean()) >= TARGETS_ON_DIAGONAL_MIN:
            return []
        distinct = series(df, "contrastive", "logits", "targets_distinct")
        acc_t = series(df, "contrastive", "logits", "acc_target")
        acc_d = series(df, "contrastive", "logits", "acc_diagonal")
        ev = {"target_on_diagonal": rnd(w.mean()),
              "targets_distinct_share": rnd(window(distinct).mean()) if len(distinct) else None,
              "acc_target_end": rnd(window(acc_t).mean()) if len(acc_t) else None,
              "acc_diagonal_end": rnd(window(acc_d).mean()) if len(acc_d) else None, "window_steps": span(w)}
        return [Finding(
            "targets_off_diagonal", "error", ctx.name,
            f"only {w.mean():.0%} of the targets point at their own pair (target i = i) in a square logit matrix"
            + (f"; {ev['targets_distinct_share']:.0%} of them are distinct"
               if ev["targets_distinct_share"] is not None else "")
            + f": the loss trains the other {1 - w.mean():.0%} of the rows toward a caption that is not theirs.", ev,
            "Build the targets as torch.arange(B) in the order of the logits' rows (offset by rank x B when "
            "features are gathered).", "logits")]

    def _diagonal(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        diag = finite(series(df, "contrastive", "logits", "loss_diagonal"))
        mean, ln_b = end_loss(df)
        if diag.empty or not left_chance(mean, ln_b):
            return []
        d = float(window(diag).mean())
        if left_chance(d, ln_b):
            return []  # the logits do score the pairs
        if _scaled_from_the_start(df, diag, ln_b):
            return []
        comp = primary_component(df)
        ev = {"component": comp, "loss_end": rnd(mean), "loss_on_diagonal_end": rnd(d), "chance_ln_B": rnd(ln_b),
              "window_steps": span(window(diag))}
        return [Finding(
            "loss_not_about_pairs", "error", ctx.name,
            f"{comp} fell to {mean:.4f} (ln(B) = {ln_b:.4f}), but the same logits scored with each row's own pair "
            f"as its target give {d:.4f}, no better than chance: the objective being minimised is not matching the "
            "pairs (targets that point elsewhere, or a loss computed on other logits than the ones observed).", ev,
            "Pass targets=... to observe, and check that the loss's targets are arange(B) over these logits.",
            "logits")]


def _scaled_from_the_start(df: pd.DataFrame, diag: pd.Series, ln_b: float) -> bool:
    """At the first observation the logits' own loss has not left chance (they score no pair above the others yet)
    and the reported one is under 1/TWO_SCALES_FACTOR of it. On logits that do not yet tell the pairs apart, the
    cross-entropy against any other targets has the diagonal's expected value (ln B at uniform logits, the same
    excess above it at confident random ones), so a loss that far below it is no cross-entropy of these logits:
    the log is scaled (the logging rules read it), not trained on other targets (which starts where the diagonal
    does and only then falls away from it)."""
    reported = finite(series(df, "loss_split", primary_component(df), "value"))
    both = pd.concat({"reported": reported, "own": diag}, axis=1).dropna()
    if both.empty:
        return False
    first = both.iloc[0]
    return (not left_chance(float(first["own"]), ln_b)
            and float(first["reported"]) <= float(first["own"]) / TWO_SCALES_FACTOR)


# Where each side's duplicates are read (probes.contrastive): image / text rows within the batch, with the square
# logits' counterfactual; or the candidates of rectangular logits (gathered from other ranks, extra negatives) whose
# columns twin a row's positive, with the rows' counterfactual. side -> (target, share metric, masked, unmasked)
DUPLICATE_READINGS = {
    "image": ("image", "duplicate_share", "loss_duplicates_masked", "loss_diagonal_same_step"),
    "text": ("text", "duplicate_share", "loss_duplicates_masked", "loss_diagonal_same_step"),
    "candidates": ("logits", "twin_share", "loss_twins_masked", "loss_target_same_step"),
}


class FalseNegatives(Rule):
    """Duplicates inside a batch scored as negatives, with what they cost measured on the step's logits."""

    topic = "contrastive"
    emits = (Emit("false_negatives", ("info", "warning", "error"), "false_negatives", 1),)
    needs = (("contrastive", "duplicate_share"),)
    thresholds = {"FALSE_NEGATIVE_GAP": FALSE_NEGATIVE_GAP, "DUPLICATE_SHARE_MIN": DUPLICATE_SHARE_MIN,
                  "HOLDS_LOSS_SHARE": HOLDS_LOSS_SHARE}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        shares = {n: finite(series(df, "contrastive", t, m)) for n, (t, m, _, _) in DUPLICATE_READINGS.items()}
        shares = {n: float(window(s).mean()) for n, s in shares.items() if len(s)}
        if not shares or max(shares.values()) < DUPLICATE_SHARE_MIN:
            return []
        # a side whose duplicates were there at the first reading while its rows were spread out holds real copies
        # (the same caption or image twice), whatever the embeddings did later; read from it first. Once that side
        # collapsed, every row looks like a duplicate of every other (or of +- one vector), so its copies and what
        # they cost are read on the steps before the collapse; with no such first reading there is nothing to read
        found = [n for n, v in shares.items() if v >= DUPLICATE_SHARE_MIN]
        side = max(found, key=lambda n: (_seen_spread_out(df, n), shares[n]))
        _, _, masked_m, full_m = DUPLICATE_READINGS[side]
        masked = finite(series(df, "contrastive", "logits", masked_m))
        full = finite(series(df, "contrastive", "logits", full_m))
        before = None
        if any(_collapsed(df, n) for n in (("image", "text") if side == "candidates" else (side,))):
            if not _seen_spread_out(df, side):
                return []
            rows = _spread_rows(df, side)
            before = rows.index[rows["spread"]]
            own = finite(series(df, "contrastive", side, "loss_duplicates_masked"))
            masked = own if len(own) else masked  # this side's copies alone: the other's may be a collapse's
            masked, full = masked[masked.index.isin(before)], full[full.index.isin(before)]
            read = finite(series(df, "contrastive", side, "duplicate_share"))
            shares[side] = float(read[read.index.isin(before)].mean())
        else:
            masked, full = window(masked), window(full)
        if masked.empty or full.empty:
            return []
        floor = _floor(df, side)
        gap = float(full.mean()) - float(masked.mean())
        # what the copies cost: the counterfactual on the step's logits, or the least loss the batch allows where
        # that is more (on logits that do not rank yet, taking k copies out of B candidates barely moves the loss,
        # while no model can take those rows below ln(1 + k))
        cost = max(gap, floor if floor is not None else 0.0)
        share = (lambda x: x / float(full.mean()) if float(full.mean()) > 0 else 0.0)  # noqa: E731
        rel = share(cost)
        mean, ln_b = end_loss(df)
        # the counterfactual decides whether they matter here: below the gap they are a measurement (info,
        # e.g. the same item sampled twice into a batch), above it a cause (an error while not learned, and in a
        # learned run once they hold most of the loss left: HOLDS_LOSS_SHARE)
        severity = ("info" if rel < FALSE_NEGATIVE_GAP else
                    "warning" if learned(mean, ln_b) and rel < HOLDS_LOSS_SHARE else "error")
        ev = {"duplicate_share": {k: rnd(v) for k, v in shares.items()},
              "loss_end_same_steps": rnd(full.mean()),
              "loss_duplicates_masked": rnd(masked.mean()), "gap": rnd(gap),
              "gap_share_of_loss": rnd(share(gap)), "loss_floor_duplicates": None if floor is None else rnd(floor),
              "floor_share_of_loss": None if floor is None else rnd(share(floor)),
              "window_steps": span(full), "chance_ln_B": rnd(ln_b), "read_before_collapse": before is not None}
        what = (f"{shares[side]:.0%} of the rows have a duplicate {side} in their batch" if side != "candidates" else
                f"{shares[side]:.0%} of the rows' positive candidates appear again among the other candidates "
                "(identical logit columns: the same item scored twice, e.g. ranks that drew the same batch)")
        return [Finding(
            "false_negatives", severity, ctx.name,
            f"{what}, and the loss scores the copies as negatives: taking them out of the negatives lowers the loss "
            f"on the same logits from {full.mean():.4f} to {masked.mean():.4f} ({share(gap):.0%} of it)"
            + ("" if floor is None or floor <= gap else
               f", and with its copies scoring alike no model can take a row below ln(1 + copies): {floor:.4f} on "
               f"average ({share(floor):.0%} of the loss)")
            + ", a share the model can never win by learning"
            + (f" (read on steps {ev['window_steps'][0]}-{ev['window_steps'][1]}, before the {side} embeddings "
               "collapsed: after it every row looks like a copy)." if before is not None else "."), ev,
            "Deduplicate captions within a batch (sample one pair per caption/class), or mask duplicates of the "
            "positive out of the negatives; under DDP give each rank its own shard (DistributedSampler).", side)]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        # duplicates are a property of the batches, not a phase of training, and the gap is a share of the loss
        # that no learning can win: a run that partly learns still loses it. So the alarm does not wait for the
        # loss to stop falling; it waits for the duplicates to be in every batch over PERSIST_MIN_OBS observations
        # and for the counterfactual gap (its share of the loss on the same logits) not to shrink over them
        target, metric, masked_m, full_m = DUPLICATE_READINGS.get(finding.target, DUPLICATE_READINGS["image"])
        share = series(df, "contrastive", target, metric)
        since = held_since(share >= DUPLICATE_SHARE_MIN)
        if since is None or int((share.index >= since).sum()) < PERSIST_MIN_OBS:
            return False
        gap_share = saved_share(df, full_m, masked_m)
        floor = _floor(df, target) if target in ("image", "text") else None  # the least loss the batch allows
        if floor is not None:
            full = finite(series(df, "contrastive", "logits", full_m))
            gap_share = pd.concat([gap_share, floor / full.where(full > 0)], axis=1).max(axis=1).dropna()
        gap_share = gap_share[gap_share.index >= since]
        return (len(gap_share) >= PERSIST_MIN_OBS and float(gap_share.mean()) >= FALSE_NEGATIVE_GAP
                and not falling(gap_share))


def _floor(df: pd.DataFrame, side: str) -> float | None:
    """The least loss `side`'s copies allow (probe reading loss_floor_duplicates), read at the first observation, the
    model as the run found it, where the pairs that are not copies were spread out (cosine_distinct under
    COLLAPSE_COSINE: the tower told distinct inputs apart, so the rows that coincide are the same input twice; a batch
    of many copies has a high mean cosine over all pairs for that reason alone). Later, rows on their way to a
    (partial) collapse coincide too, and those are not copies in the data; the batches come from one sampler all run.
    None where not read that way (the candidates' twins, a crowded first reading, older records)."""
    if side not in ("image", "text"):
        return None
    floor = finite(series(df, "contrastive", side, "loss_floor_duplicates"))
    apart = series(df, "contrastive", side, "cosine_distinct")
    if floor.empty or apart.empty or int(apart.index[0]) != int(floor.index[0]):
        return None
    return float(floor.iloc[0]) if float(apart.iloc[0]) < COLLAPSE_COSINE else None


def _collapsed(df: pd.DataFrame, name: str) -> bool:
    """The embeddings of `name` ended collapsed (to one vector, or +- one: `embedding_collapse`'s reading)."""
    cos = series(df, "collapse", name, "cosine_mean")
    share = finite(series(df, "collapse", name, "top_sv_share"))
    return bool((len(cos) and float(window(cos).mean()) >= COLLAPSE_COSINE)
                or (len(share) and float(window(share).mean()) >= COLLAPSE_COSINE))


def _spread_rows(df: pd.DataFrame, side: str) -> pd.DataFrame:
    """Per step with a duplicate reading of `side`: its share, and whether the rows were spread out (mean pairwise
    cosine, and the top direction's share of the energy where measured, under COLLAPSE_COSINE)."""
    both = pd.concat({"share": series(df, "contrastive", side, "duplicate_share"),
                      "cos": series(df, "collapse", side, "cosine_mean"),
                      "line": series(df, "collapse", side, "top_sv_share")}, axis=1)
    both = both[both["share"].notna() & both["cos"].notna()]
    return both.assign(spread=(both["cos"] < COLLAPSE_COSINE) & ~(both["line"] >= COLLAPSE_COSINE))


def _seen_spread_out(df: pd.DataFrame, side: str) -> bool:
    """At the first observation that read duplicates (the model as the run found it: before updates could collapse
    anything), `side` had them in DUPLICATE_SHARE_MIN of its rows while its embeddings were spread out: those rows
    are copies of one another in the data (a caption or image twice in the batch), which a later collapse, making
    every row look like every other (or like +- one vector), cannot account for. Rows that only turn into twins on
    the way to a collapse show none there."""
    if side not in ("image", "text"):
        return False
    rows = _spread_rows(df, side)
    return bool(len(rows) and rows["share"].iloc[0] >= DUPLICATE_SHARE_MIN and rows["spread"].iloc[0])


# A tower that discards its input changes its one vector only through its weights: by one optimizer step per batch,
# little (the nine dev cases with such rows: cosine to the previous batch's 0.9989-0.9998), and a single large step
# can turn it once. Batches of one item each turn it whenever the item changes: DISTINCT_BATCHES_MIN turns beyond
# COLLAPSE_COSINE among the probe's early observations are that many different items. Not the median of the turns:
# a sampler that serves each class's items in runs of batches (64 items of a class, batches of 32: two batches per
# class) changes the item on every other batch only, and the median pair is then two batches of one class.
DISTINCT_BATCHES_MIN = 3


class BatchOfCopies(Rule):
    """Every row of a batch is one vector, and a different vector from batch to batch (probe ``batch_drift``): the
    batches hold one item each (the same caption or class prompt repeated), so every candidate of a row is a copy of
    its positive. A tower that discards its input (a zero projection, a pooled token every caption shares) also
    gives copies, but the same vector for every batch (above). So the rows are copies (IDENTICAL_ROWS_COSINE, median
    over the probe's early observations) while the batches' vector turned beyond COLLAPSE_COSINE from one batch to
    the next at least DISTINCT_BATCHES_MIN times, unless the model mixes the samples of a batch (then the one vector
    per batch is the model's: a batch-first MHA)."""

    topic = "contrastive"
    emits = (Emit("batch_of_copies", ("warning", "error"), "false_negatives", 1,
                  explains=("embedding_collapse", "shared_input_component")),)
    needs = (("batch_drift", "mean_cosine_prev"),)
    thresholds = {"IDENTICAL_ROWS_COSINE": IDENTICAL_ROWS_COSINE, "COLLAPSE_COSINE": COLLAPSE_COSINE,
                  "PERSIST_MIN_OBS": PERSIST_MIN_OBS, "DISTINCT_BATCHES_MIN": DISTINCT_BATCHES_MIN}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        # a model whose output for a sample depends on the rest of its batch (samples_mixed: attention or pooling
        # over the batch axis) makes every row one vector, the batch's own, different from batch to batch: copies
        # that are the model's, not the data's
        mixing, reordered = mixing_modules(df)
        if set(mixing) - reordered:
            return []
        for side in ("text", "image"):
            rows = finite(series(df, "batch_drift", side, "rows_cosine"))
            drift = finite(series(df, "batch_drift", side, "mean_cosine_prev"))
            if (len(drift) < PERSIST_MIN_OBS or float(rows.median()) < IDENTICAL_ROWS_COSINE
                    or int((drift < COLLAPSE_COSINE).sum()) < DISTINCT_BATCHES_MIN):
                continue
            return [self._finding(df, ctx, side, rows, drift)]
        return []

    @staticmethod
    def _finding(df: pd.DataFrame, ctx: RunContext, side: str, rows: pd.Series, drift: pd.Series) -> Finding:
        mean, ln_b = end_loss(df)
        turns = int((drift < COLLAPSE_COSINE).sum())
        ev = {"embedding": side, "rows_cosine_median": rnd(rows.median(), 6), "steps": span(rows),
              "batch_to_batch_cosine_median": rnd(drift.median()), "batch_to_batch_cosine_max": rnd(drift.max()),
              "batch_to_batch_turns": turns, "batch_pairs": int(len(drift)),
              "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b)}
        masked = finite(series(df, "contrastive", side, "loss_duplicates_masked"))
        full = finite(series(df, "contrastive", "logits", "loss_diagonal_same_step"))
        both = pd.concat({"masked": masked, "full": full}, axis=1).dropna()
        cost = ""
        if len(both):  # the counterfactual on the same logits: the copies taken out of the negatives
            ev.update(loss_same_steps=rnd(both["full"].mean()), loss_duplicates_masked=rnd(both["masked"].mean()))
            cost = (f" On the same logits, taking the copies out of the negatives lowers the loss from "
                    f"{both['full'].mean():.4f} to {both['masked'].mean():.4f}: a share no learning can win.")
        return Finding(
            "batch_of_copies", "warning" if left_chance(mean, ln_b) else "error", ctx.name,
            f"every {side} row of a batch is the same vector (mean pairwise cosine {rows.median():.6f}, median over "
            f"steps {ev['steps'][0]}-{ev['steps'][1]}), and the vector changes from batch to batch (cosine between "
            f"consecutive batches' {side} vectors under {COLLAPSE_COSINE:g} on {turns} of {len(drift)} pairs, median "
            f"{drift.median():.3f}; a tower that discards its input gives the same vector for every batch): each "
            f"batch holds one {side} item repeated, so every candidate of a row is a "
            "copy of its positive, scored as a negative." + cost, ev,
            "Shuffle the data (DataLoader(shuffle=True), or a sampler that mixes classes): a dataset stored class by "
            "class and read in order gives batches of one class; with class prompts as captions, draw at most one "
            "pair per class into a batch or mask same-class columns out of the negatives.", side)


class EmbeddingWithoutGradient(Rule):
    """An embedding that enters the loss with no gradient behind it (no_grad, detach, a frozen tower)."""

    topic = "contrastive"
    emits = (Emit("embedding_without_gradient", ("warning", "error"), "no_gradient_path", 1),)
    needs = (("contrastive", "requires_grad"),)

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        out = []
        frozen = series(df, "contrastive", "model", "frozen_numel")
        none = grad_is_none(df)
        # the mechanism must be in the model: frozen parameters, or trainable ones that got no gradient (not an
        # unused temperature scalar, which cuts nothing); an embedding detached only on its way to observe() is not one
        no_grad_params = sorted(set(none["target"])) if len(none) else []
        unused = set(unused_temperatures(df, no_grad_params))
        no_grad_params = [p for p in no_grad_params if p not in unused]
        if not ((len(frozen) and float(frozen.iloc[-1]) > 0) or no_grad_params):
            return []
        for name in ("image", "text"):
            rg = series(df, "contrastive", name, "requires_grad")
            if rg.empty or float(window(rg).max()) > 0:
                continue
            mean, ln_b = end_loss(df)
            severity = "warning" if learned(mean, ln_b) else "error"
            # one tower locked while the other carries a gradient is a design (LiT); what decides the run is
            # whether the other tower learns. Parameters on the loss's path that no param group holds say it
            # cannot: that is the failure (params_outside_optimizer), this side only a warning beside it
            other = series(df, "contrastive", "text" if name == "image" else "image", "requires_grad")
            outside = series(df, "optimizer", "outside", "with_grad")
            other_stalled = bool(len(other) and float(window(other).max()) > 0 and len(outside)
                                 and float(outside.iloc[-1]) > 0)
            if other_stalled:
                severity = "warning"
            ev = {"embedding": name, "steps": span(rg), "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b),
                  "frozen_numel": int(frozen.iloc[-1]) if len(frozen) else None,
                  "trainable_without_gradient": no_grad_params[:8],
                  "trainable_without_gradient_count": len(no_grad_params),
                  "other_tower_outside_optimizer": other_stalled}
            out.append(Finding(
                "embedding_without_gradient", severity, ctx.name,
                f"the {name} embedding enters the loss without a gradient at every observed step: no parameter "
                f"before it is trained (a torch.no_grad() block, a .detach(), or every {name} parameter frozen). "
                "Only the other tower can learn to match it"
                + (", and parameters on the loss's path with gradients sit in no param group of the optimizer "
                   "(params_outside_optimizer): the other tower cannot." if other_stalled else "."), ev,
                f"Find the no_grad/detach/requires_grad=False on the {name} path; if the tower is locked on purpose "
                "(LiT), the other tower must carry the alignment alone.", name))
        return out

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        # a tower frozen for the first steps and unfrozen later is a common schedule: only a state that
        # persisted while the rest of the model moved, without the loss falling, is an alarm. When no
        # embedding carries a gradient, nothing on either path can move, so the weights never move by
        # their norm: persistence is then counted in observations (as for an lr the schedule took away)
        holds = series(df, "contrastive", finding.target, "requires_grad") <= 0
        others = [series(df, "contrastive", n, "requires_grad") for n in ("image", "text") if n != finding.target]
        if others and all(len(o) and float(window(o).max()) <= 0 for o in others):
            since = held_since(holds)
            return (since is not None and int((holds.index >= since).sum()) >= PERSIST_MIN_OBS
                    and not loss_falling(df, since))
        return stuck(df, holds)


# Soft targets within 2% of a uniform distribution (mean row entropy / ln(candidates), the bar of a uniform
# attention softmax): every candidate is nearly as likely as the row's own pair, so the cross-entropy is
# minimised by giving them all the same logit and the run is trained away from matching pairs. Label smoothing
# (0.1 over 64 candidates: 0.18) and distillation targets sit far below.
FLAT_TARGETS = 0.98


class SoftTargetsFlat(Rule):
    """Soft targets that give every candidate nearly the same probability."""

    topic = "contrastive"
    emits = (Emit("soft_targets_flat", ("error",), "wrong_targets", 1),)
    needs = (("contrastive", "soft_target_entropy"),)
    thresholds = {"FLAT_TARGETS": FLAT_TARGETS, "PERSIST_MIN_OBS": PERSIST_MIN_OBS}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        ent = finite(series(df, "contrastive", "logits", "soft_target_entropy"))
        if len(ent) < PERSIST_MIN_OBS or not bool((window(ent) >= FLAT_TARGETS).all()):
            return []
        diag = finite(series(df, "contrastive", "logits", "soft_target_on_diagonal"))
        ev = {"entropy_frac_end": rnd(float(ent.iloc[-1]), 6), "entropy_frac_min": rnd(float(ent.min()), 6),
              "argmax_on_diagonal_end": rnd(float(diag.iloc[-1])) if len(diag) else None, "steps": span(ent),
              "threshold": FLAT_TARGETS}
        return [Finding(
            "soft_targets_flat", "error", ctx.name,
            f"the soft targets passed with the logits are nearly uniform over the candidates (mean row entropy "
            f"{float(ent.iloc[-1]):.4f} of ln(candidates) at the end, at least {float(ent.min()):.4f} throughout): the "
            "row's own pair is hardly more likely than any other, so the loss is minimised by equal logits, not by "
            "matching pairs (a temperature that multiplies the target similarities instead of dividing them, or "
            "targets softened twice).", ev,
            "Build the targets with the sharpness the logits have (softmax(sim / T), the same T that divides the "
            "logits), or use the diagonal as the target.", "logits")]
