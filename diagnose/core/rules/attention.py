"""Rules on attention and learned latents: uniform or collapsed softmaxes, a softmax over the batch
axis, samples whose outputs depend on the rest of their batch, latents that are copies, near copies, never
move, or whose init scale a norm removes."""

from __future__ import annotations

import math

import pandas as pd

from ..definitions import LEARNED_LOSS_FRACTION
from ..findings import Finding
from .base import Emit, Rule, RunContext, end_loss, rnd, select, series, span, targets, window
from .persistence import held_since, loss_falling

# Softmax entropy H/ln(K): >= 0.98 is within 2% of a uniform distribution (attends to nothing in
# particular); <= 0.05 puts essentially all weight on one key.
UNIFORM_ENTROPY, COLLAPSED_ENTROPY = 0.98, 0.05
# Latents: pairwise cosine above this means they are near copies (symmetric); relative drift below
# LATENT_STILL after LATENT_MIN_STEPS steps means they are not being trained.
LATENT_COSINE, LATENT_STILL, LATENT_MIN_STEPS = 0.99, 1e-3, 20
# Between-latent std below this is float32 rounding of identical rows (relative precision ~1e-7 on
# O(0.02-1) values): the latents are copies.
LATENT_SYMMETRIC_STD = 1e-8
# A normalisation that multiplies the latents' RMS by more than this removes their init scale.
NORM_GAIN_REMOVES_SCALE = 10.0


def uniform_matters(df: pd.DataFrame, entropy: pd.Series) -> bool:
    """Whether a softmax that ends uniform can be part of why the run fails: not when the run learned (end
    loss below the learned bar) or while the loss is still falling over the span the softmax has been uniform.

    A uniform softmax is the init state of any attention whose scores start near zero, and stays the best
    state when what it pools is alike: tokens that all carry the same content plus independent noise are best
    averaged (the mean has the highest signal-to-noise ratio), and a pooling over a few such tokens has
    nothing to select. A run that learns through such a pooling shows that averaging was enough; uniform
    attention is worth a warning only in a run that is not learning. Without loss records that cannot be
    told, and the softmax is reported."""
    mean, ln_b = end_loss(df)
    if not (math.isfinite(mean) and math.isfinite(ln_b)):
        return True
    if mean < LEARNED_LOSS_FRACTION * ln_b:
        return False
    since = held_since(entropy >= UNIFORM_ENTROPY)
    return not loss_falling(df, since if since is not None else int(entropy.index[0]))


class AttentionEntropy(Rule):
    """End-of-run normalised entropy H/ln K of every softmax except the contrastive logits. A uniform one is
    reported only in a run that is not learning (`uniform_matters`): not learned at the end and the loss not
    falling while the softmax has been uniform."""

    topic = "attention"
    emits = (Emit("attention_uniform", ("warning",)),
             Emit("attention_entropy_collapse", ("warning",)))
    needs = (("softmax_entropy", "entropy_mean"),)
    thresholds = {"UNIFORM_ENTROPY": UNIFORM_ENTROPY, "COLLAPSED_ENTROPY": COLLAPSED_ENTROPY,
                  "LEARNED_LOSS_FRACTION": LEARNED_LOSS_FRACTION}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        ent = select(df, "softmax_entropy", "entropy_mean")
        ent = ent[~ent["target"].str.startswith("logits.") & ~ent["target"].str.contains(r"\.head\d+$")]
        if ent.empty:
            return []
        groups = {t: g.groupby("step")["value"].mean().sort_index() for t, g in ent.groupby("target")}
        end = {t: float(window(s).mean()) for t, s in groups.items()}
        first = {t: float(s.iloc[0]) for t, s in groups.items()}
        out = []
        for fid, chosen, text, nxt in (
            ("attention_uniform", {t: v for t, v in end.items() if v >= UNIFORM_ENTROPY
                                   and uniform_matters(df, groups[t])},
             f"are uniform (H/ln K >= {UNIFORM_ENTROPY}) at the end of the run",
             "They average their inputs instead of selecting.",),
            ("attention_entropy_collapse", {t: v for t, v in end.items() if v <= COLLAPSED_ENTROPY},
             f"put nearly all weight on one key (H/ln K <= {COLLAPSED_ENTROPY})", ""),
        ):
            if chosen:
                out.append(Finding(
                    fid, "warning", ctx.name,
                    f"{len(chosen)} softmax(es) {text}: {', '.join(list(chosen)[:4])}. {nxt}".strip(),
                    {"modules": {t: {"end": rnd(v), "first": rnd(first[t])} for t, v in list(chosen.items())[:10]}},
                    "Uniform attention over tokens returns the token mean, dominated by any shared component."
                    if fid == "attention_uniform" else
                    "Check for high-norm outlier tokens or logits growing without bound (lr, temperature).",
                    next(iter(chosen))))
        return out


class SoftmaxOverBatch(Rule):
    """A softmax whose normalised axis is axis 0 with the size of the batch."""

    topic = "attention"
    emits = (Emit("softmax_over_batch", ("error",), "pooling_axis", 1),)
    needs = (("softmax_entropy", "axis"), ("softmax_entropy", "axis_size"))

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        sm = pd.concat([select(df, "softmax_entropy", m) for m in ("axis", "axis_size", "ndim")])
        out = []
        for target, g in sm.groupby("target"):
            last = g.sort_values("step").groupby("metric")["value"].last()
            axis, size, ndim = last.get("axis"), last.get("axis_size"), last.get("ndim", 2.0)
            if axis == 0 and ndim >= 2 and size == ctx.batch_size:
                out.append(Finding(
                    "softmax_over_batch", "error", ctx.name,
                    f"the softmax '{target}' normalises over axis 0 of a {int(ndim)}-d tensor, whose size equals the "
                    "batch "
                    f"size ({ctx.batch_size}): its weights are shared out across the samples of the batch instead of "
                    "within each sample, so every output depends on the other samples in the batch and changes with "
                    "batch size (a sample alone in a batch gets weight 1 everywhere).",
                    {"module": target, "axis": int(axis), "axis_size": int(size), "ndim": int(ndim),
                     "batch_size": ctx.batch_size},
                    "Pass the token/key axis to the softmax (dim=-1 or dim=1 for (B, T) scores); if axis 0 is really a "
                    "sequence axis that happens to equal the batch size, ignore this finding.", target))
        return out


# Batch mixing (probes.batch_mixing): a module's outputs for the first half of a batch recomputed without the
# second half. Samples processed independently change by ~1e-7 in float32 (a different kernel for another
# batch size) and up to ~1e-2 in float16 / bfloat16; attention, a softmax or a normalisation over the batch
# axis changes them by O(0.1-1). 1e-3 and 5e-2 sit orders of magnitude from both. Two readings: the mixing is a
# property of the code, the same on every step, and one reading is one recomputation.
MIX_REL, MIX_REL_LOW, MIX_MIN_READINGS = 1e-3, 5e-2, 2


def mixing_modules(df: pd.DataFrame) -> tuple[dict[str, pd.Series], set[str]]:
    """The modules whose outputs changed on every reading when recomputed without the other half of the batch
    (probe ``batch_mixing``; name -> its mixed_rel readings), and of them those that only returned the samples' own
    rows in another order."""
    mixing: dict[str, pd.Series] = {}
    reordered: set[str] = set()
    for name in targets(df, "batch_mixing", "mixed_rel"):
        rel = series(df, "batch_mixing", name, "mixed_rel").dropna()
        low = series(df, "batch_mixing", name, "low_precision")
        bar = MIX_REL_LOW if len(low) and bool((low > 0).any()) else MIX_REL
        if len(rel) and bool((rel > bar).all()):
            mixing[name] = rel
            moved = series(df, "batch_mixing", name, "reordered_rel").reindex(rel.index)
            if len(moved) and bool((moved < bar).all()):
                reordered.add(name)
    return mixing, reordered


class SamplesMixed(Rule):
    """A module whose output for one sample changes when the other samples of the batch are removed: values
    mixed across samples (attention or a softmax over the batch axis), or the samples' own rows returned in an
    order that depends on the batch (a sort for packing not undone: the captions no longer match their rows)."""

    topic = "attention"
    emits = (Emit("samples_mixed", ("warning", "error"), "pooling_axis", 1),
             Emit("samples_reordered", ("warning", "error"), "misaligned_pairs", 1))
    needs = (("batch_mixing", "mixed_rel"),)
    thresholds = {"MIX_REL": MIX_REL, "MIX_REL_LOW": MIX_REL_LOW, "MIX_MIN_READINGS": MIX_MIN_READINGS}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        mixing, reordered = mixing_modules(df)
        # the deepest: a module is reported, not the modules that contain it and mix through it
        deepest = [n for n in mixing if not any(m != n and (n == "<root>" or m.startswith(n + ".")) for m in mixing)]
        if not deepest:
            return []
        name = max(deepest, key=lambda n: (len(mixing[n]), float(mixing[n].median())))
        rel = mixing[name]
        severity = "error" if len(rel) >= MIX_MIN_READINGS else "warning"
        where = "the model" if name == "<root>" else f"module '{name}'"
        ev = {"module": name, "mixed_rel_median": rnd(float(rel.median()), 6), "readings": len(rel),
              "steps": [int(s) for s in rel.index], "modules_mixing": sorted(deepest)[:10], "threshold": MIX_REL}
        measured = (f"recomputed on the step's own inputs without the other half of the batch, its outputs for the "
                    f"same samples change by {float(rel.median()):.3g} of their norm (steps "
                    f"{', '.join(str(int(s)) for s in rel.index)}; samples processed independently change by < "
                    f"{MIX_REL:g})")
        if name in reordered:
            return [Finding(
                "samples_reordered", severity, ctx.name,
                f"{where} returns each sample's output in a row that depends on the rest of the batch: {measured}, "
                "yet every recomputed row equals some row of the whole batch's outputs. The rows are the samples' "
                "own, in another order: a sort (by length, for packing) whose order is not undone, so the "
                "embeddings no longer line up with the captions or images they are paired with.", ev,
                "Undo the sort before returning (unsort with the inverse permutation, or "
                "pack_padded_sequence(..., enforce_sorted=False)).", name)]
        return [Finding(
            "samples_mixed", severity, ctx.name,
            f"{where} gives each sample an output that depends on the other samples of its batch: {measured}. "
            "Attention, a softmax or a normalisation runs over the batch axis: nn.MultiheadAttention without "
            "batch_first=True fed (batch, seq, dim) tensors reads the batch as the sequence, and a softmax over "
            "dim 0 of (batch, tokens) scores pools across samples.", ev,
            "Give the attention its layout (nn.MultiheadAttention(..., batch_first=True) for (B, T, D) tensors, or "
            "transpose to (T, B, D)); take softmaxes and normalisations over the token / feature axis.", name)]


class LatentSymmetry(Rule):
    """Learned latents/queries that are exact or near copies of each other."""

    topic = "attention"
    emits = (Emit("latents_symmetric", ("error",), "symmetric_latents", 1),
             Emit("latents_similar", ("warning",), "symmetric_latents", 3))
    needs = (("latent_stats", "identical_rows"), ("latent_stats", "between_latent_std"),
             ("latent_stats", "cosine_mean"))
    thresholds = {"LATENT_COSINE": LATENT_COSINE, "LATENT_SYMMETRIC_STD": LATENT_SYMMETRIC_STD}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        out = []
        for name in targets(df, "latent_stats", "rms"):
            ident = series(df, "latent_stats", name, "identical_rows")
            between = series(df, "latent_stats", name, "between_latent_std")
            cos = series(df, "latent_stats", name, "cosine_mean")
            if ((len(ident) and float(ident.iloc[-1]) > 0)
                    or (len(between) and float(between.iloc[-1]) < LATENT_SYMMETRIC_STD)):
                out.append(Finding(
                    "latents_symmetric", "error", ctx.name,
                    f"the latents of {name} are copies of each other (identical rows "
                    f"{float(ident.iloc[-1]) if len(ident) else 'n/a'}, "
                    f"between-latent std {float(between.iloc[-1]) if len(between) else float('nan'):.3g}): every "
                    "latent "
                    "computes the same thing and gets the same gradient, so the symmetry never breaks.",
                    {"identical_rows_end": rnd(ident.iloc[-1]) if len(ident) else None,
                     "between_latent_std_end": rnd(between.iloc[-1], 8) if len(between) else None,
                     "steps": span(series(df, "latent_stats", name, "rms"))},
                    "Initialise latents with random values (e.g. normal std 0.02), not a constant.", name))
            elif len(cos) and float(cos.iloc[-1]) > LATENT_COSINE:
                out.append(Finding(
                    "latents_similar", "warning", ctx.name,
                    f"the latents of {name} are near copies: mean pairwise cosine {float(cos.iloc[-1]):.3f}.",
                    {"cosine_mean_end": rnd(cos.iloc[-1]), "cosine_mean_first": rnd(cos.iloc[0]), "steps": span(cos)},
                    "Check the latent init and whether the latents receive distinct gradients.", name))
        return out


class LatentsNotMoving(Rule):
    """Relative drift of the latents from their initial value."""

    topic = "attention"
    emits = (Emit("latents_not_moving", ("warning",)),)
    needs = (("latent_stats", "drift"),)
    thresholds = {"LATENT_STILL": LATENT_STILL, "LATENT_MIN_STEPS": LATENT_MIN_STEPS}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        out = []
        for name in targets(df, "latent_stats", "drift"):
            drift = series(df, "latent_stats", name, "drift")
            if len(drift) and int(drift.index[-1]) >= LATENT_MIN_STEPS and float(drift.iloc[-1]) < LATENT_STILL:
                out.append(Finding(
                    "latents_not_moving", "warning", ctx.name,
                    f"the latents of {name} moved {float(drift.iloc[-1]):.2e} of their initial norm in "
                    f"{int(drift.index[-1])} steps.",
                    {"drift_end": rnd(drift.iloc[-1], 8), "steps": span(drift)},
                    "Check that they receive gradients and are in the optimizer.", name))
        return out


class LatentScaleNormalised(Rule):
    """The gain a normalisation applies to the latents at their first measurement."""

    topic = "attention"
    emits = (Emit("latent_scale_normalised", ("info",)),)
    needs = (("latent_stats", "norm_gain"), ("latent_stats", "post_norm_rms"))
    thresholds = {"NORM_GAIN_REMOVES_SCALE": NORM_GAIN_REMOVES_SCALE}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        out = []
        for name in targets(df, "latent_stats", "norm_gain"):
            gain, rms = series(df, "latent_stats", name, "norm_gain"), series(df, "latent_stats", name, "rms")
            post = series(df, "latent_stats", name, "post_norm_rms")
            if not (len(gain) and len(rms)) or float(gain.iloc[0]) <= NORM_GAIN_REMOVES_SCALE:
                continue
            g0 = float(gain.iloc[0])
            p0 = float(post.iloc[0]) if len(post) else float("nan")
            out.append(Finding(
                "latent_scale_normalised", "info", ctx.name,
                f"the latents of {name} enter a normalisation that rescales them {g0:.0f}x (rms "
                f"{float(rms.iloc[0]):.4f} -> "
                f"{p0:.3f}): their init scale does not reach the attention scores, so a small init cannot by itself "
                "flatten the softmax.",
                {"latent_rms_first": rnd(rms.iloc[0], 6), "norm_gain_first": rnd(g0, 2),
                 "post_norm_rms_first": rnd(p0, 4) if len(post) else None, "step": int(gain.index[0])},
                "Rule out 'latent init too small' as a cause unless the latents also feed an un-normalised path.",
                               name))
        return out
