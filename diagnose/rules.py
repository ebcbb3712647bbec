"""Rules: small functions over probe records that produce findings.

Records are the long DataFrame the probes write (step, probe, target, metric, value). A rule reads
only records and the run context, never the model, so the same rules run on a live run, a saved
run directory, or a hand-made record set in a test. Thresholds are named constants with a comment
saying where the value comes from; no rule knows about any particular fault or benchmark case.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from .findings import Finding, RunContext, sort_findings

# --- thresholds ----------------------------------------------------------------------------------
# Symmetric InfoNCE at uniform logits is exactly ln(B). At random init both reference models sit
# within ~1.5% of ln(B) (measured: 4.895 vs 4.852, 4.173 vs 4.159), and a model that ranks positives
# even slightly better than chance leaves that band within tens of steps; 3% separates the two.
CHANCE_REL_TOL = 0.03
# Share of the run used as "the end of the run" for window statistics (at least WINDOW_MIN steps).
WINDOW_FRAC, WINDOW_MIN = 0.2, 5
# Mean off-diagonal cosine of L2-normalised embeddings: isotropic random vectors give ~0 (±1/sqrt(D));
# 0.95 means every embedding lies within ~18 degrees of one direction: retrieval can't separate them.
COLLAPSE_COSINE = 0.95
# Input features whose mean-pooled vectors have mean pairwise cosine above this share one dominant
# direction (the anisotropy of transformer hidden states, Ethayarajh 2019).
SHARED_INPUT_COSINE = 0.5
# Karpathy / CS231n rule of thumb: a healthy update/weight ratio is ~1e-3. Adam's first steps are
# sign-like (every element moves by ~lr, so the ratio is lr / rms(W)) and healthy runs peak around
# 1e-2; a peak above 0.1 (100x the rule of thumb) means one step rewrites a tenth of the layer.
UPDATE_RATIO_HIGH = 0.1
# A layer whose gradient norm is 1e-4 of the median layer's gets no usable signal (vanishing);
# 1e4 times the median dominates every update (exploding).
VANISHING_REL, EXPLODING_REL = 1e-4, 1e4
# Gradient norm of the whole model falling 100x from its early peak while the loss has not improved
# is the signature of a saturated or collapsed model (the loss surface went flat, not the optimum).
GRAD_FALL_RATIO = 1e-2
# Softmax entropy H/ln(K): >= 0.98 is within 2% of a uniform distribution (attends to nothing in
# particular); <= 0.05 puts essentially all weight on one key.
UNIFORM_ENTROPY, COLLAPSED_ENTROPY = 0.98, 0.05
# open_clip clamps exp(logit_scale) at 100; within 1% of it the temperature is pinned. A logit scale
# below 2 makes cosine logits span at most [-2, 2]: the softmax cannot be confident (drift to 1).
CLAMP_REL, LOW_LOGIT_SCALE = 0.01, 2.0
# total - sum(w_i L_i) beyond float rounding of a logged value means the log misstates a component.
LOGGING_REL_TOL = 1e-3
# Two logged components are "identical" when they agree to half a unit in the 4th decimal: the
# precision of the seed's printed logs (e.g. "CLIP: 4.8481, MRL: 4.8481").
IDENTICAL_ATOL = 5e-5
# Share of window steps on which the components must be identical to call it a pattern.
IDENTICAL_SHARE = 0.9
# Contrastive negatives per row (B - 1): SimCLR (Chen et al. 2020, fig. 9) still learns at batch 256
# and degrades steadily below it; fewer than 16 negatives gives a weak, noisy signal, and fewer than
# 4 leaves the loss almost no room below ln(B) (ln 2 = 0.69 at B = 2).
FEW_NEGATIVES_WARN, FEW_NEGATIVES_ERROR = 16, 4
# Latents: pairwise cosine above this means they are near copies (symmetric); relative drift below
# LATENT_STILL after LATENT_MIN_STEPS steps means they are not being trained.
LATENT_COSINE, LATENT_STILL, LATENT_MIN_STEPS = 0.99, 1e-3, 20
# Between-latent std below this is float32 rounding of identical rows (relative precision ~1e-7 on
# O(0.02-1) values): the latents are copies.
LATENT_SYMMETRIC_STD = 1e-8
# A normalisation that multiplies the latents' RMS by more than this removes their init scale.
NORM_GAIN_REMOVES_SCALE = 10.0
# Karpathy / CS231n rule of thumb ~1e-3 (see UPDATE_RATIO_HIGH): 100x below it, even the largest step of
# the run changes the weights by < 1e-5 of their norm, i.e. < 1% after 1000 steps. The peak over the run
# is used, so the tail of a cosine or linear schedule (lr -> 0) does not count as "too low".
UPDATE_RATIO_LOW = 1e-5
# Embeddings that enter cosine-similarity logits must be unit norm; F.normalize in float32 leaves
# |norm - 1| ~ 1e-7, bf16 ~ 4e-3 (8 mantissa bits); 1e-2 is above both roundings.
UNIT_NORM_TOL = 1e-2
# The whole model's weight norm falling below half its initial value within a run: with AdamW the
# decay shrinks weights by lr * wd per step (1e-5 at open_clip's lr 2e-4, wd 0.05: ~0.1% in 100 steps),
# and gradient steps usually grow the norm, so halving means decay dominates the updates.
PARAM_SHRINK = 0.5
# RankMe effective rank (Garrido et al. 2023) of a batch of embeddings: ~1 when they all point one way
# (complete collapse); at least 4 independent directions in use means the embeddings are spread out.
SPREAD_EFFECTIVE_RANK = 4.0


# --- record access ---------------------------------------------------------------------------------


def series(df: pd.DataFrame, probe: str, target: str, metric: str) -> pd.Series:
    sel = df[(df["probe"] == probe) & (df["target"] == target) & (df["metric"] == metric)]
    return sel.groupby("step")["value"].mean().sort_index()


def targets(df: pd.DataFrame, probe: str, metric: str) -> list[str]:
    return sorted(df[(df["probe"] == probe) & (df["metric"] == metric)]["target"].unique())


def window(s: pd.Series) -> pd.Series:
    n = max(WINDOW_MIN, int(math.ceil(len(s) * WINDOW_FRAC)))
    return s.iloc[-n:]


def _steps(s: pd.Series) -> list[int]:
    return [int(s.index[0]), int(s.index[-1])] if len(s) else []


def _r(x: float, digits: int = 4) -> float:
    return float(round(float(x), digits)) if math.isfinite(float(x)) else float(x)


# --- rules ---------------------------------------------------------------------------------------


def loss_at_chance(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    out = []
    for comp in targets(df, "loss_split", "chance"):
        values, chance = series(df, "loss_split", comp, "value"), series(df, "loss_split", comp, "chance")
        if values.empty or chance.empty:
            continue
        w = window(values)
        ln_b, mean = float(chance.iloc[-1]), float(w.mean())
        if not math.isfinite(mean):
            continue
        rel = (mean - ln_b) / ln_b
        ev = {"component": comp, "window_steps": _steps(w), "loss_mean": _r(mean), "chance_ln_B": _r(ln_b),
              "batch_size": ctx.batch_size, "implied_candidates": _r(math.exp(mean), 1),
              "first_step_loss": _r(values.iloc[0]), "relative_gap": _r(rel)}
        if abs(rel) < CHANCE_REL_TOL:
            out.append(Finding(
                "loss_at_chance", "error", ctx.name,
                f"{comp} averaged {mean:.4f} over steps {ev['window_steps'][0]}-{ev['window_steps'][1]}, "
                f"{abs(rel):.1%} from ln(B) = ln({round(math.exp(ln_b))}) = {ln_b:.4f}: the model scores the "
                f"matching caption no better than the other {round(math.exp(ln_b)) - 1} in the batch "
                f"(exp(loss) = {math.exp(mean):.1f} equally likely candidates).",
                ev, "Look at the collapse and gradient findings of this run: a loss pinned at ln(B) means "
                "uniform logits, usually identical embeddings or no gradient reaching the encoder.", comp))
        elif rel >= CHANCE_REL_TOL:
            out.append(Finding(
                "loss_above_chance", "error", ctx.name,
                f"{comp} averaged {mean:.4f} over the last steps, {rel:.1%} above chance ln(B) = {ln_b:.4f}: "
                "the model is confidently wrong, worse than guessing.", ev,
                "Check for misaligned pairs, a temperature that is too high, or diverging updates.", comp))
    return out


def embedding_collapse(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    out = []
    for name in ("image", "text"):
        cos = series(df, "collapse", name, "cosine_mean")
        if cos.empty:
            continue
        w = window(cos)
        if float(w.mean()) >= COLLAPSE_COSINE:
            rank = series(df, "collapse", name, "effective_rank")
            ev = {"embedding": name, "window_steps": _steps(w), "cosine_mean_end": _r(w.mean()),
                  "cosine_mean_first": _r(cos.iloc[0]), "first_step": int(cos.index[0])}
            if not rank.empty:
                ev["effective_rank_end"] = _r(rank.iloc[-1], 2)
                ev["effective_rank_first"] = _r(rank.iloc[0], 2)
            crossed = cos[cos >= COLLAPSE_COSINE]
            ev["first_step_above_threshold"] = int(crossed.index[0]) if len(crossed) else None
            out.append(Finding(
                "embedding_collapse", "error", ctx.name,
                f"{name} embeddings collapsed: mean pairwise cosine {w.mean():.3f} over steps "
                f"{ev['window_steps'][0]}-{ev['window_steps'][1]} (was {cos.iloc[0]:.3f} at step {int(cos.index[0])}); "
                f"every {name} maps to nearly the same vector, so the logits are uniform.", ev,
                f"Find the layer where the {name} path stops depending on its input (collapse of watched "
                "outputs, attention entropy), and check the update/param ratios of that path.", name))
    for name in targets(df, "collapse", "cosine_mean"):
        if name in ("image", "text", "input"):
            continue
        cos = series(df, "collapse", name, "cosine_mean")
        w = window(cos)
        if len(w) and float(w.mean()) >= COLLAPSE_COSINE:
            out.append(Finding(
                "intermediate_collapse", "warning", ctx.name,
                f"intermediate output '{name}' is input-independent: mean pairwise cosine {w.mean():.3f} "
                f"(was {cos.iloc[0]:.3f} at step {int(cos.index[0])}).",
                {"output": name, "cosine_mean_end": _r(w.mean()), "cosine_mean_first": _r(cos.iloc[0]),
                 "window_steps": _steps(w)},
                "The collapse starts at or before this module.", name))
    return out


def input_shared_component(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    cos = series(df, "collapse", "input", "cosine_mean")
    if cos.empty or float(cos.mean()) < SHARED_INPUT_COSINE:
        return []
    share = series(df, "collapse", "input", "top_sv_share")
    ev = {"input_cosine_mean": _r(cos.mean()), "steps": _steps(cos)}
    if not share.empty:
        ev["top_singular_direction_share"] = _r(share.mean())
    learned = ctx.final_loss.get("loss_clip", ctx.chance_loss) < (1 - CHANCE_REL_TOL) * ctx.chance_loss
    return [Finding(
        "input_shared_component", "info" if learned else "warning", ctx.name,
        f"the input features share one dominant direction: mean pairwise cosine of mean-pooled inputs "
        f"{cos.mean():.3f}. A model must learn to cancel it before images become distinguishable; a "
        "mean over tokens or an over-large update keeps it.", ev,
        "Compare with the input's content variance; try centring the features (subtract the dataset mean) "
        "as an ablation.", "input")]


def gradient_health(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    out = []
    none = df[(df["probe"] == "gradient_flow") & (df["metric"] == "grad_is_none") & (df["value"] > 0)]
    if len(none):
        params = sorted(none["target"].unique())
        out.append(Finding(
            "no_gradient", "error", ctx.name,
            f"{len(params)} trainable parameter(s) never received a gradient (grad is None): "
            f"{', '.join(params[:5])}{' ...' if len(params) > 5 else ''}. They are cut from the loss "
            "(detached branch, unused module) and keep their initial values.",
            {"parameters": params[:20], "steps": _steps(none.groupby('step')['value'].sum())},
            "Find the detach()/no_grad/unused path between these parameters and the loss.", params[0]))
    layer = df[df["probe"] == "gradient_flow.layer"]
    gn = layer[layer["metric"] == "grad_norm"].pivot_table(index="step", columns="target", values="value")
    zero = layer[layer["metric"] == "zero_grad_frac"].pivot_table(index="step", columns="target", values="value")
    if not gn.empty:
        w = window(gn)
        med_layer = w.median(axis=0)
        ref = float(np.nanmedian(med_layer.values)) if len(med_layer) else float("nan")
        dead = [t for t in zero.columns if len(zero[t]) and bool((window(zero[t]) >= 1.0).all())]
        if dead:
            out.append(Finding(
                "dead_gradients", "error", ctx.name,
                f"layer(s) {', '.join(dead[:5])} received exactly-zero gradients on every step of the window: "
                "nothing upstream of them can learn.",
                {"layers": dead, "window_steps": _steps(window(zero[dead[0]]))},
                "Look for a ReLU/mask/softmax that saturates, or a zero multiplier in the path.", dead[0]))
        if ref > 0 and math.isfinite(ref):
            vanish = {t: float(v) for t, v in med_layer.items() if t not in dead and 0 <= v < VANISHING_REL * ref}
            explode = {t: float(v) for t, v in med_layer.items() if v > EXPLODING_REL * ref}
            if vanish:
                out.append(Finding(
                    "vanishing_gradients", "warning", ctx.name,
                    f"{len(vanish)} layer(s) get gradients under {VANISHING_REL:g} of the median layer's "
                    f"({ref:.3g}): {', '.join(list(vanish)[:4])}.",
                    {"median_layer_grad_norm": _r(ref, 8), "layers": {k: _r(v, 10) for k, v in list(vanish.items())[:10]},
                     "window_steps": _steps(w.index.to_series())},
                    "Check for saturating nonlinearities or normalisation that removes the signal.", next(iter(vanish))))
            if explode:
                out.append(Finding(
                    "exploding_gradients", "warning", ctx.name,
                    f"{len(explode)} layer(s) get gradients over {EXPLODING_REL:g}x the median layer's: "
                    f"{', '.join(list(explode)[:4])}.",
                    {"median_layer_grad_norm": _r(ref, 8), "layers": {k: _r(v, 4) for k, v in list(explode.items())[:10]}},
                    "Lower the learning rate or clip gradients for these layers.", next(iter(explode))))
    model_gn = series(df, "gradient_flow.model", "model", "grad_norm")
    loss = series(df, "loss_split", "loss_clip", "value")
    if len(model_gn) >= 2 * WINDOW_MIN:
        early = model_gn.iloc[: max(WINDOW_MIN, len(model_gn) // 10)]
        late = window(model_gn)
        peak, end = float(early.max()), float(late.median())
        improved = len(loss) >= 2 and float(window(loss).mean()) < (1 - CHANCE_REL_TOL) * float(loss.iloc[0])
        if peak > 0 and math.isfinite(peak) and end < GRAD_FALL_RATIO * peak and not improved:
            out.append(Finding(
                "gradient_fall", "warning", ctx.name,
                f"the model's gradient norm fell from {peak:.3g} (peak, step {int(early.idxmax())}) to "
                f"{end:.3g} (median of steps {_steps(late)[0]}-{_steps(late)[1]}) while the loss did not improve: "
                "the loss surface went flat, not the optimum.",
                {"peak_grad_norm": _r(peak, 8), "peak_step": int(early.idxmax()), "end_grad_norm": _r(end, 10),
                 "ratio": _r(end / peak, 8), "window_steps": _steps(late)},
                "Find what saturated in the first steps (collapse, attention entropy, update/param)."))
    return out


def nonfinite_values(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    bad_grad = df[(df["probe"] == "gradient_flow.model") & (df["metric"] == "nonfinite_grad") & (df["value"] > 0)]
    bad_loss = df[(df["probe"] == "loss_split") & (df["metric"] == "nonfinite") & (df["value"] > 0)]
    if bad_grad.empty and bad_loss.empty:
        return []
    steps = sorted(set(bad_grad["step"]) | set(bad_loss["step"]))
    ev = {"first_step": int(steps[0]), "steps_affected": len(steps),
          "nonfinite_grad_elements_first": float(bad_grad["value"].iloc[0]) if len(bad_grad) else 0.0,
          "nonfinite_loss_components": sorted(bad_loss["target"].unique())}
    return [Finding(
        "nonfinite_values", "error", ctx.name,
        f"NaN/Inf appeared at step {steps[0]} and on {len(steps)} step(s) in all "
        f"(loss components: {', '.join(ev['nonfinite_loss_components']) or 'none'}; gradients: "
        f"{'yes' if len(bad_grad) else 'no'}). Everything after that step is meaningless.", ev,
        "Look at the update/param ratio and gradient norms just before that step; lower the lr or clip.")]


def update_ratio(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    up = df[(df["probe"] == "gradient_flow.layer") & (df["metric"] == "update_to_param")]
    up = up[up["value"].notna()]  # NaN after divergence (nonfinite_values reports it); all-NaN groups break idxmax
    if up.empty:
        return []
    by_layer = up.groupby("target")
    peak, median = by_layer["value"].max().sort_values(ascending=False), by_layer["value"].median()
    peak_step = up.loc[up.groupby("target")["value"].idxmax()].set_index("target")["step"]
    high = peak[peak > UPDATE_RATIO_HIGH]
    if high.empty:
        return []
    opt = ctx.config.get("optimization", {})
    lr, mult = opt.get("lr"), opt.get("matrix_lr_multiplier", 1.0)
    ev = {"threshold": UPDATE_RATIO_HIGH,
          "layers": {k: {"peak": _r(v, 4), "at_step": int(peak_step[k]), "median": _r(median[k], 5)}
                     for k, v in high.head(8).items()},
          "layers_above": int(len(high)), "layers_total": int(len(peak)), "lr": lr,
          "matrix_lr_multiplier": mult}
    return [Finding(
        "update_ratio_high", "warning", ctx.name,
        f"{len(high)} of {len(peak)} layers had an optimizer step that changed them by more than "
        f"{UPDATE_RATIO_HIGH:g} of their norm (rule of thumb ~1e-3): highest {high.index[0]}, "
        f"{high.iloc[0]:.3g} at step {int(peak_step[high.index[0]])}. At lr {lr}"
        f"{f' (x{mult:g} on weight matrices at this scale)' if mult != 1 else ''} single steps rewrite a "
        "visible part of these weights before the loss can steer them.", ev,
        "Ablate with a 10x lower learning rate (or warm-up) and compare the loss against ln(B).",
        str(high.index[0]))]


def attention_entropy(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    out = []
    ent = df[(df["probe"] == "softmax_entropy") & (df["metric"] == "entropy_mean")]
    ent = ent[~ent["target"].str.startswith("logits.") & ~ent["target"].str.contains(r"\.head\d+$")]
    if ent.empty:
        return out
    end = {t: float(window(g.groupby("step")["value"].mean().sort_index()).mean()) for t, g in ent.groupby("target")}
    first = {t: float(g.sort_values("step")["value"].iloc[0]) for t, g in ent.groupby("target")}
    uniform = {t: v for t, v in end.items() if v >= UNIFORM_ENTROPY}
    peaked = {t: v for t, v in end.items() if v <= COLLAPSED_ENTROPY}
    if uniform:
        out.append(Finding(
            "attention_uniform", "warning", ctx.name,
            f"{len(uniform)} softmax(es) are uniform (H/ln K >= {UNIFORM_ENTROPY}) at the end of the run: "
            f"{', '.join(list(uniform)[:4])}. They average their inputs instead of selecting.",
            {"modules": {t: {"end": _r(v), "first": _r(first[t])} for t, v in list(uniform.items())[:10]}},
            "Uniform attention over tokens returns the token mean, dominated by any shared component.",
            next(iter(uniform))))
    if peaked:
        out.append(Finding(
            "attention_entropy_collapse", "warning", ctx.name,
            f"{len(peaked)} softmax(es) put nearly all weight on one key (H/ln K <= {COLLAPSED_ENTROPY}): "
            f"{', '.join(list(peaked)[:4])}.",
            {"modules": {t: {"end": _r(v), "first": _r(first[t])} for t, v in list(peaked.items())[:10]}},
            "Check for high-norm outlier tokens or logits growing without bound (lr, temperature).",
            next(iter(peaked))))
    return out


def temperature(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    s = series(df, "loss_split", "extras", "logit_scale")
    if s.empty:
        return []
    end, first = float(s.iloc[-1]), float(s.iloc[0])
    ev = {"logit_scale_first": _r(first, 3), "logit_scale_end": _r(end, 3), "clamp": ctx.max_logit_scale,
          "steps": _steps(s)}
    if end >= (1 - CLAMP_REL) * ctx.max_logit_scale:
        return [Finding("temperature_at_clamp", "warning", ctx.name,
                        f"the logit scale reached the clamp ({end:.2f} of max {ctx.max_logit_scale:g}): the "
                        "temperature is no longer learned.", ev,
                        "Usually harmless late in training; early on it hints at a loss the model can only lower by sharpening.")]
    if end < LOW_LOGIT_SCALE:
        return [Finding("temperature_toward_1", "warning", ctx.name,
                        f"the logit scale fell to {end:.2f} (from {first:.2f}): logits of unit vectors then span "
                        f"at most ±{end:.2f}, so even a perfect ranking costs most of ln(B).", ev,
                        "The model is lowering the loss by flattening the softmax; look for collapse or misaligned pairs.")]
    return []


def loss_logging(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    out = []
    gap = series(df, "loss_split", "total", "total_minus_weighted_sum")
    tot = series(df, "loss_split", "total", "value")
    if not gap.empty and not tot.empty:
        rel = (gap.abs() / tot.abs().clip(lower=1e-12)).dropna()
        bad = rel[rel > LOGGING_REL_TOL]
        if len(bad):
            weights = {t: _r(series(df, "loss_split", t, "weight").iloc[-1], 4)
                       for t in targets(df, "loss_split", "weight")}
            out.append(Finding(
                "loss_logging_inconsistent", "error", ctx.name,
                f"the logged total differs from the sum of weight x logged component on {len(bad)} of {len(rel)} "
                f"steps (largest gap {float(gap.abs().max()):.4g} at step {int(gap.abs().idxmax())}): at least one "
                "logged component is not the value the objective used.",
                {"steps_inconsistent": int(len(bad)), "steps_total": int(len(rel)), "max_abs_gap": _r(gap.abs().max(), 6),
                 "at_step": int(gap.abs().idxmax()), "weights": weights},
                "Log each component exactly as it enters the total (and the MRL dims it covered)."))
    comps = targets(df, "loss_split", "value")
    comps = [c for c in comps if c != "total"]
    for i, a in enumerate(comps):
        for b in comps[i + 1 :]:
            sa, sb = window(series(df, "loss_split", a, "value")), window(series(df, "loss_split", b, "value"))
            both = pd.concat([sa, sb], axis=1, join="inner").dropna()
            if both.empty:
                continue
            same = (both.iloc[:, 0] - both.iloc[:, 1]).abs() <= IDENTICAL_ATOL
            if float(same.mean()) < IDENTICAL_SHARE:
                continue
            chance = series(df, "loss_split", a, "chance")
            ln_b = float(chance.iloc[-1]) if len(chance) else float("nan")
            at_chance = math.isfinite(ln_b) and abs(float(both.iloc[:, 0].mean()) - ln_b) / ln_b < CHANCE_REL_TOL
            why = (f"both sit at ln(B) = {ln_b:.4f}: with uniform logits every contrastive loss equals ln(B) "
                   "whatever its dimension, so they agree because the model is at chance, not because one is a copy"
                   if at_chance else
                   "they are not at chance, so identical values point at one value logged under two names")
            out.append(Finding(
                "components_identical", "warning" if at_chance else "error", ctx.name,
                f"{a} and {b} agree to {IDENTICAL_ATOL:g} on {float(same.mean()):.0%} of the last {len(both)} steps; {why}.",
                {"components": [a, b], "share_identical": _r(same.mean(), 3), "window_steps": _steps(both.iloc[:, 0]),
                 "mean_value": _r(both.iloc[:, 0].mean()), "chance_ln_B": _r(ln_b)},
                "Log each component from its own computation; check the loss-at-chance finding first." if at_chance
                else "Check the logging code: one component is reported under another's name.", f"{a}~{b}"))
    return out


def few_negatives(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    negatives = ctx.batch_size - 1
    if negatives >= FEW_NEGATIVES_WARN:
        return []
    sev = "error" if negatives < FEW_NEGATIVES_ERROR else "warning"
    return [Finding(
        "few_negatives", sev, ctx.name,
        f"each row is scored against only {negatives} negative(s) (batch {ctx.batch_size}); chance is "
        f"ln({ctx.batch_size}) = {math.log(ctx.batch_size):.3f}, so the loss can fall at most that far and "
        "its gradient carries little information about the rest of the data.",
        {"batch_size": ctx.batch_size, "negatives_per_row": negatives, "chance_ln_B": _r(math.log(ctx.batch_size))},
        "Raise the batch size (or gather features across ranks), or use a memory bank of negatives.")]


def latent_health(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    out = []
    for name in targets(df, "latent_stats", "rms"):
        ident = series(df, "latent_stats", name, "identical_rows")
        between = series(df, "latent_stats", name, "between_latent_std")
        cos = series(df, "latent_stats", name, "cosine_mean")
        drift = series(df, "latent_stats", name, "drift")
        rms = series(df, "latent_stats", name, "rms")
        if (len(ident) and float(ident.iloc[-1]) > 0) or (len(between) and float(between.iloc[-1]) < LATENT_SYMMETRIC_STD):
            out.append(Finding(
                "latents_symmetric", "error", ctx.name,
                f"the latents of {name} are copies of each other (identical rows {float(ident.iloc[-1]) if len(ident) else 'n/a'}, "
                f"between-latent std {float(between.iloc[-1]) if len(between) else float('nan'):.3g}): every latent "
                "computes the same thing and gets the same gradient, so the symmetry never breaks.",
                {"identical_rows_end": _r(ident.iloc[-1]) if len(ident) else None,
                 "between_latent_std_end": _r(between.iloc[-1], 8) if len(between) else None, "steps": _steps(rms)},
                "Initialise latents with random values (e.g. normal std 0.02), not a constant.", name))
        elif len(cos) and float(cos.iloc[-1]) > LATENT_COSINE:
            out.append(Finding(
                "latents_similar", "warning", ctx.name,
                f"the latents of {name} are near copies: mean pairwise cosine {float(cos.iloc[-1]):.3f}.",
                {"cosine_mean_end": _r(cos.iloc[-1]), "cosine_mean_first": _r(cos.iloc[0]), "steps": _steps(cos)},
                "Check the latent init and whether the latents receive distinct gradients.", name))
        if len(drift) and int(drift.index[-1]) >= LATENT_MIN_STEPS and float(drift.iloc[-1]) < LATENT_STILL:
            out.append(Finding(
                "latents_not_moving", "warning", ctx.name,
                f"the latents of {name} moved {float(drift.iloc[-1]):.2e} of their initial norm in {int(drift.index[-1])} steps.",
                {"drift_end": _r(drift.iloc[-1], 8), "steps": _steps(drift)},
                "Check that they receive gradients and are in the optimizer.", name))
        gain = df[(df["probe"] == "latent_stats") & (df["target"] == name) & (df["metric"] == "norm_gain")]
        if len(gain) and len(rms):
            g0 = float(gain.sort_values("step")["value"].iloc[0])
            post = df[(df["probe"] == "latent_stats") & (df["target"] == name) & (df["metric"] == "post_norm_rms")]
            if g0 > NORM_GAIN_REMOVES_SCALE:
                out.append(Finding(
                    "latent_scale_normalised", "info", ctx.name,
                    f"the latents of {name} enter a normalisation that rescales them {g0:.0f}x (rms {float(rms.iloc[0]):.4f} -> "
                    f"{float(post.sort_values('step')['value'].iloc[0]) if len(post) else float('nan'):.3f}): their init scale does "
                    "not reach the attention scores, so a small init cannot by itself flatten the softmax.",
                    {"latent_rms_first": _r(rms.iloc[0], 6), "norm_gain_first": _r(g0, 2),
                     "post_norm_rms_first": _r(post.sort_values('step')['value'].iloc[0], 4) if len(post) else None,
                     "step": int(gain["step"].min())},
                    "Rule out 'latent init too small' as a cause unless the latents also feed an un-normalised path.", name))
    return out


def _peak_model_update(df: pd.DataFrame) -> float:
    up = series(df, "gradient_flow.model", "model", "update_to_param")
    up = up[np.isfinite(up.values)] if len(up) else up
    return float(up.max()) if len(up) else float("nan")


def _learned(ctx: RunContext) -> bool:
    return ctx.final_loss.get("loss_clip", ctx.chance_loss) < (1 - CHANCE_REL_TOL) * ctx.chance_loss


def update_ratio_low(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    up = series(df, "gradient_flow.model", "model", "update_to_param")
    up = up[np.isfinite(up.values)] if len(up) else up
    if len(up) < WINDOW_MIN:
        return []
    peak = float(up.max())
    if peak >= UPDATE_RATIO_LOW:
        return []
    opt = ctx.config.get("optimization", {})
    ev = {"peak_update_to_param": _r(peak, 10), "at_step": int(up.idxmax()), "median_update_to_param": _r(up.median(), 10),
          "threshold": UPDATE_RATIO_LOW, "steps": _steps(up), "lr": opt.get("lr"),
          "matrix_lr_multiplier": opt.get("matrix_lr_multiplier", 1.0)}
    return [Finding(
        "update_ratio_low", "warning" if _learned(ctx) else "error", ctx.name,
        f"no optimizer step changed the model by more than {peak:.2g} of its weight norm (largest at step "
        f"{ev['at_step']}; rule of thumb ~1e-3, threshold {UPDATE_RATIO_LOW:g}): at lr {ev['lr']} the weights "
        "barely move, so the loss cannot leave its initial value in any reasonable number of steps.", ev,
        "Raise the learning rate (check its units, the schedule and any lr multiplier) and compare the loss against ln(B).")]


def embeddings_not_normalised(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    bad = {}
    for name in ("image", "text"):
        norm = series(df, "collapse", name, "norm_mean")
        norm = norm[np.isfinite(norm.values)] if len(norm) else norm
        if len(norm) and float((norm - 1.0).abs().median()) > UNIT_NORM_TOL:
            bad[name] = {"norm_mean_first": _r(norm.iloc[0]), "norm_mean_end": _r(norm.iloc[-1]),
                         "norm_mean_median": _r(norm.median())}
    if not bad:
        return []
    ent = series(df, "softmax_entropy", "logits.image_to_text", "entropy_mean")
    ev = {"embeddings": bad, "tolerance": UNIT_NORM_TOL}
    if len(ent):
        ev["logits_entropy_first"] = _r(ent.iloc[0])
    names = " and ".join(bad)
    medians = ", ".join(f"{k} {v['norm_mean_median']:.3g}" for k, v in bad.items())
    return [Finding(
        "embeddings_not_normalised", "warning", ctx.name,
        f"the {names} embeddings that enter the contrastive logits are not unit norm (median norm "
        f"{medians}): the logits are raw dot products, "
        "not cosines, so the temperature has no fixed meaning and the logits can saturate the softmax.", ev,
        "L2-normalise both embeddings right before the similarity (F.normalize(x, dim=-1)).", next(iter(bad)))]


def weights_shrinking(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    pn = series(df, "gradient_flow.model", "model", "param_norm")
    pn = pn[np.isfinite(pn.values)] if len(pn) else pn
    if len(pn) < 2 * WINDOW_MIN or float(pn.iloc[0]) <= 0:
        return []
    end, first = float(window(pn).mean()), float(pn.iloc[0])
    if end >= PARAM_SHRINK * first:
        return []
    layer = df[(df["probe"] == "gradient_flow.layer") & (df["metric"] == "param_norm")]
    ratios = {}
    for t, g in layer.groupby("target"):
        g = g.sort_values("step")["value"]
        if len(g) and float(g.iloc[0]) > 0:
            ratios[t] = float(g.iloc[-1]) / float(g.iloc[0])
    shrunk = dict(sorted(((t, r) for t, r in ratios.items() if r < PARAM_SHRINK), key=lambda kv: kv[1])[:8])
    opt = ctx.config.get("optimization", {})
    ev = {"param_norm_first": _r(first), "param_norm_end": _r(end), "ratio": _r(end / first), "threshold": PARAM_SHRINK,
          "layers_shrunk": {k: _r(v) for k, v in shrunk.items()}, "lr": opt.get("lr"),
          "weight_decay": opt.get("weight_decay"), "window_steps": _steps(window(pn))}
    return [Finding(
        "weights_shrinking", "warning" if _learned(ctx) else "error", ctx.name,
        f"the model's weight norm fell from {first:.3g} to {end:.3g} ({end / first:.0%}) during the run: something "
        "shrinks the weights faster than the gradients grow them (weight decay x lr too large, or a decay applied "
        "to parameters that should not decay); shrunk weight matrices leave biases to dominate the outputs.", ev,
        "Check weight_decay and lr * weight_decay per step (AdamW shrinks weights by that factor every step).")]


def chance_not_collapsed(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    values, chance = series(df, "loss_split", "loss_clip", "value"), series(df, "loss_split", "loss_clip", "chance")
    if values.empty or chance.empty:
        return []
    mean, ln_b = float(window(values).mean()), float(chance.iloc[-1])
    if not math.isfinite(mean) or abs(mean - ln_b) / ln_b >= CHANCE_REL_TOL:
        return []
    ranks = {}
    for name in ("image", "text"):
        r = series(df, "collapse", name, "effective_rank")
        r = r[np.isfinite(r.values)] if len(r) else r
        if r.empty:
            return []
        ranks[name] = float(r.iloc[-1])
    peak = _peak_model_update(df)
    layer_up = df[(df["probe"] == "gradient_flow.layer") & (df["metric"] == "update_to_param")]["value"]
    layer_peak = float(layer_up[np.isfinite(layer_up)].max()) if len(layer_up) else float("nan")
    if min(ranks.values()) < SPREAD_EFFECTIVE_RANK or not (UPDATE_RATIO_LOW <= peak) or layer_peak > UPDATE_RATIO_HIGH:
        return []
    ev = {"loss_clip_mean": _r(mean), "chance_ln_B": _r(ln_b), "window_steps": _steps(window(values)),
          "effective_rank_end": {k: _r(v, 2) for k, v in ranks.items()}, "rank_threshold": SPREAD_EFFECTIVE_RANK,
          "peak_update_to_param": _r(peak, 6), "peak_layer_update_to_param": _r(layer_peak, 6)}
    return [Finding(
        "chance_not_collapsed", "error", ctx.name,
        f"loss_clip is at chance ({mean:.4f} vs ln(B) = {ln_b:.4f}) although both embeddings stay spread out "
        f"(effective rank image {ranks['image']:.1f}, text {ranks['text']:.1f}) and the optimizer moves the weights at "
        f"a normal rate (peak update/param {peak:.2g}): the model tells images apart and captions apart but cannot "
        "match them. The pairs carry no shared signal: misaligned image/caption pairs (shuffled or off-by-one "
        "indices) or features that do not describe the same item.", ev,
        "Check the pairing in the data pipeline: print a few (image id, caption) pairs from a training batch; "
        "check the held-out split's pairs too.")]


def softmax_over_batch(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    sm = df[(df["probe"] == "softmax_entropy") & df["metric"].isin(["axis", "axis_size", "ndim"])]
    out = []
    for target, g in sm.groupby("target"):
        last = g.sort_values("step").groupby("metric")["value"].last()
        axis, size, ndim = last.get("axis"), last.get("axis_size"), last.get("ndim", 2.0)
        if axis == 0 and ndim >= 2 and size == ctx.batch_size:
            out.append(Finding(
                "softmax_over_batch", "error", ctx.name,
                f"the softmax '{target}' normalises over axis 0 of a {int(ndim)}-d tensor, whose size equals the batch "
                f"size ({ctx.batch_size}): its weights are shared out across the samples of the batch instead of "
                "within each sample, so every output depends on the other samples in the batch and changes with "
                "batch size (a sample alone in a batch gets weight 1 everywhere).",
                {"module": target, "axis": int(axis), "axis_size": int(size), "ndim": int(ndim),
                 "batch_size": ctx.batch_size},
                "Pass the token/key axis to the softmax (dim=-1 or dim=1 for (B, T) scores); if axis 0 is really a "
                "sequence axis that happens to equal the batch size, ignore this finding.", target))
    return out


RULES: list[Callable[[pd.DataFrame, RunContext], list[Finding]]] = [
    loss_at_chance, embedding_collapse, input_shared_component, gradient_health, nonfinite_values,
    update_ratio, attention_entropy, temperature, loss_logging, few_negatives, latent_health,
    update_ratio_low, embeddings_not_normalised, weights_shrinking, chance_not_collapsed, softmax_over_batch,
]


def run_rules(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    findings: list[Finding] = []
    for rule in RULES:
        findings.extend(rule(df, ctx))
    return sort_findings(findings)
