"""Rules on gradients and updates: missing, dead, vanishing, exploding or falling gradients; NaN/Inf;
update/param ratios too high or too low; weights shrinking under decay."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from ..definitions import CHANCE_REL_TOL, END_MIN_POINTS, left_chance
from ..findings import Finding
from .base import (
    Emit,
    Rule,
    RunContext,
    end_loss,
    finite,
    grad_is_none,
    primary_component,
    rnd,
    select,
    series,
    span,
    targets,
    window,
)

# A layer whose gradient norm is 1e-4 of the median layer's gets no usable signal (vanishing);
# 1e4 times the median dominates every update (exploding).
VANISHING_REL, EXPLODING_REL = 1e-4, 1e4
# Gradient norm of the whole model falling 100x from its early peak while the loss has not improved
# is the signature of a saturated or collapsed model (the loss surface went flat, not the optimum).
GRAD_FALL_RATIO = 1e-2
# Karpathy / CS231n rule of thumb: a healthy update/weight ratio is ~1e-3. Adam's first steps are
# sign-like (every element moves by ~lr, so the ratio is lr / rms(W)) and healthy runs peak around
# 1e-2; a peak above 0.1 (100x the rule of thumb) means one step rewrites a tenth of the layer.
UPDATE_RATIO_HIGH = 0.1
# 100x below the rule of thumb, even the largest step of the run changes the weights by < 1e-5 of their
# norm, i.e. < 1% after 1000 steps. The peak over the run is used, so the tail of a cosine or linear
# schedule (lr -> 0) does not count as "too low".
UPDATE_RATIO_LOW = 1e-5
# The whole model's weight norm falling below half its initial value within a run: with AdamW the
# decay shrinks weights by lr * wd per step (1e-5 at open_clip's lr 2e-4, wd 0.05: ~0.1% in 100 steps),
# and gradient steps usually grow the norm, so halving means decay dominates the updates.
PARAM_SHRINK = 0.5
# The same mechanism read per layer: decay applied to some parameters only (weight matrices, not the
# LayerNorm gains and biases that hold much of a transformer's norm) can empty the projections while the
# model's total stays above half. A layer is counted when it held at least this share of the model's
# initial squared norm: a tiny bias or scale that shrinks moves nothing; and only while the model's total
# fell as well (decay pulls everything it covers down).
LAYER_MIN_SHARE = 1e-3


# Online alarms on states that are normal at initialisation (a loss at ln B, spread-out embeddings at
# chance) wait until the optimizer has moved the weights, summed over the steps so far, by as much as
# their own norm: a model changed that much has had every opportunity to change its outputs, so a
# loss still at chance is no longer the initial state. Healthy runs leave chance long before (the
# reference direct model: per-step update/param ~1e-2, loss below chance within tens of steps).
SETTLED_CUMULATIVE_UPDATE = 1.0


def cumulative_updates(df: pd.DataFrame) -> pd.Series:
    """At each measured step, the sum so far of the model's update/param (steps not measured count at the measured
    mean up to that step); empty without update records."""
    up = finite(series(df, "gradient_flow.model", "model", "update_to_param"))
    return up.expanding().mean() * (up.index.to_numpy() - up.index[0] + 1) if len(up) else up


def cumulative_update(df: pd.DataFrame) -> float:
    """Sum over the steps so far of the model's update/param (steps not measured count at the measured mean)."""
    summed = cumulative_updates(df)
    return float(summed.iloc[-1]) if len(summed) else 0.0


def settled(df: pd.DataFrame) -> bool:
    return cumulative_update(df) >= SETTLED_CUMULATIVE_UPDATE


def _loss_left_chance(df: pd.DataFrame) -> bool:
    return left_chance(*end_loss(df))


class GradientPresence(Rule):
    """Parameters that never get a gradient (None) and layers whose gradients are exactly zero."""

    topic = "gradients"
    emits = (Emit("no_gradient", ("warning", "error"), "no_gradient_path", 1),
             Emit("dead_gradients", ("error",), "no_gradient_path", 1),
             Emit("scale_without_gradient", ("warning",), "temperature", 1),
             Emit("temperature_unused", ("info",)))
    needs = (("gradient_flow", "grad_is_none"), ("gradient_flow.layer", "zero_grad_frac"))

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        out = []
        none = grad_is_none(df)
        none = none[none["value"] > 0]
        params = sorted(none["target"].unique()) if len(none) else []
        unused = unused_temperatures(df, params)
        params = [p for p in params if p not in unused]
        if unused:
            out.append(Finding(
                "temperature_unused", "info", ctx.name,
                f"the temperature parameter(s) {', '.join(unused)} (one element) never received a gradient: the loss "
                "scales its logits by something else (a fixed temperature) or by a detached copy, so they keep their "
                "initial value. Harmless when the fixed temperature is the one intended.",
                {"parameters": unused, "steps": span(none.groupby('step')['value'].sum())},
                "Drop the unused parameter, or scale the logits by it (logits = scale.exp() * img @ txt.T) if it "
                "was meant to be learned.", unused[0]))
        if params:
            none = none[none["target"].isin(params)]
            copy = _copy_on_path(df, params)
            where = ("They are cut from the loss (detached branch, unused module) and keep their initial values."
                     if copy is None else
                     f"The loss's path holds {copy:.0f} trainable values outside the model and every param group (at "
                     "least as many as these hold): it runs through another instance of them, where their gradient "
                     "goes (params_unregistered names the mechanism; this is its symptom).")
            out.append(Finding(
                "no_gradient", "error" if copy is None else "warning", ctx.name,
                f"{len(params)} trainable parameter(s) never received a gradient (grad is None): "
                f"{', '.join(params[:5])}{' ...' if len(params) > 5 else ''}. " + where,
                {"parameters": params[:20], "steps": span(none.groupby('step')['value'].sum()),
                 **({"unregistered_values_on_path": int(copy)} if copy is not None else {})},
                "Find the detach()/no_grad/unused path between these parameters and the loss." if copy is None else
                "Build the loss (or the module that wraps the model) around the instance the optimizer holds.",
                params[0]))
        zero = select(df, "gradient_flow.layer", "zero_grad_frac").pivot_table(index="step", columns="target",
                                                                               values="value")
        dead = dead_layers(zero)
        scales = _dead_temperatures(df, dead)
        dead = [t for t in dead if t not in scales]
        for layer, name in scales.items():
            value = finite(series(df, "gradient_flow", name, "param_norm"))
            out.append(Finding(
                "scale_without_gradient", "warning", ctx.name,
                f"the temperature parameter {name} (one element) received exactly-zero gradients on every step of the "
                f"window and stays at |{float(value.iloc[-1]) if len(value) else float('nan'):.4g}|: a clamp or "
                "bound it sits beyond passes no gradient (clamping exp(scale) at the bound meant for scale itself, "
                "or a min/max after the exp), so the softmax keeps the sharpness it started with.",
                {"parameter": name, "layer": layer, "window_steps": span(window(zero[layer])),
                 "value_end": rnd(float(value.iloc[-1])) if len(value) else None},
                "Clamp the parameter itself in place after the step (open_clip: logit_scale.clamp_(0, ln 100)), or "
                "clamp exp(scale) at 100, not at ln 100.", name))
        if dead:
            out.append(Finding(
                "dead_gradients", "error", ctx.name,
                f"layer(s) {', '.join(dead[:5])} received exactly-zero gradients on every step of the window: "
                "nothing upstream of them can learn.",
                {"layers": dead, "window_steps": span(window(zero[dead[0]]))},
                "Look for a ReLU/mask/softmax that saturates, or a zero multiplier in the path.", dead[0]))
        return out


def _copy_on_path(df: pd.DataFrame, params: list[str]) -> float | None:
    """Values of the unregistered trainable leaves on the loss's path (probe graph_leaves) when they are at least
    as many as `params` hold: the loss ran through a copy of them (a loss module or closure that kept an older
    instance of the model). None otherwise, or without the reading."""
    out = finite(series(df, "graph_leaves", "unregistered", "numel"))
    numel = select(df, "gradient_flow", "numel").groupby("target")["value"].last()
    held = float(sum(float(numel.get(p, 0.0)) for p in params))
    if out.empty or held <= 0 or float(out.iloc[-1]) < held:
        return None
    return float(out.iloc[-1])


def unused_temperatures(df: pd.DataFrame, params: list[str]) -> list[str]:
    """Parameters without a gradient that are one element named like a temperature: a scalar has nothing upstream
    of it, so no gradient means the loss does not use it, not that a part of the model is cut off."""
    numel = select(df, "gradient_flow", "numel").groupby("target")["value"].last()
    return [p for p in params if TEMPERATURE_NAME.search(p) and float(numel.get(p, 0.0)) == 1.0]


def _dead_temperatures(df: pd.DataFrame, dead: list[str]) -> dict[str, str]:
    """{layer: parameter} for dead layers that hold a single element, a parameter named like a temperature: a
    scalar that gets no gradient pins the temperature; it does not cut anything upstream from the loss."""
    if not dead:
        return {}
    sizes = select(df, "gradient_flow.layer", "numel").groupby("target")["value"].first()
    out = {}
    for layer in dead:
        if float(sizes.get(layer, 0.0)) != 1.0:
            continue
        names = [t for t in targets(df, "gradient_flow", "zero_grad_frac")
                 if (t.rpartition(".")[0] or "<root>") == layer and TEMPERATURE_NAME.search(t)]
        if len(names) == 1:
            out[layer] = names[0]
    return out


def dead_layers(zero: pd.DataFrame) -> list[str]:
    return [t for t in zero.columns if len(zero[t]) and bool((window(zero[t]) >= 1.0).all())]


class GradientScale(Rule):
    """Per-layer gradient norms at the end of the run against the median layer's."""

    topic = "gradients"
    emits = (Emit("vanishing_gradients", ("warning",), "no_gradient_path", 3),
             Emit("exploding_gradients", ("warning",), "learning_rate_too_high", 3))
    needs = (("gradient_flow.layer", "grad_norm"),)
    thresholds = {"VANISHING_REL": VANISHING_REL, "EXPLODING_REL": EXPLODING_REL}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        gn = select(df, "gradient_flow.layer", "grad_norm").pivot_table(index="step", columns="target", values="value")
        if gn.empty:
            return []
        w = window(gn)
        med_layer = w.median(axis=0)
        ref = float(np.nanmedian(med_layer.values)) if len(med_layer) else float("nan")
        if not (ref > 0 and math.isfinite(ref)):
            return []
        dead = dead_layers(select(df, "gradient_flow.layer", "zero_grad_frac")
                           .pivot_table(index="step", columns="target", values="value"))
        vanish = {t: float(v) for t, v in med_layer.items() if t not in dead and 0 <= v < VANISHING_REL * ref}
        explode = {t: float(v) for t, v in med_layer.items() if v > EXPLODING_REL * ref}
        out = []
        if vanish:
            out.append(Finding(
                "vanishing_gradients", "warning", ctx.name,
                f"{len(vanish)} layer(s) get gradients under {VANISHING_REL:g} of the median layer's "
                f"({ref:.3g}): {', '.join(list(vanish)[:4])}.",
                {"median_layer_grad_norm": rnd(ref, 8), "layers": {k: rnd(v, 10) for k, v in list(vanish.items())[:10]},
                 "window_steps": span(w.index.to_series())},
                "Check for saturating nonlinearities or normalisation that removes the signal.", next(iter(vanish))))
        if explode:
            out.append(Finding(
                "exploding_gradients", "warning", ctx.name,
                f"{len(explode)} layer(s) get gradients over {EXPLODING_REL:g}x the median layer's: "
                f"{', '.join(list(explode)[:4])}.",
                {"median_layer_grad_norm": rnd(ref, 8),
                 "layers": {k: rnd(v, 4) for k, v in list(explode.items())[:10]}},
                "Lower the learning rate or clip gradients for these layers.", next(iter(explode))))
        return out


class GradientFall(Rule):
    """The whole model's gradient norm falling far below its early peak while the loss did not improve."""

    topic = "gradients"
    emits = (Emit("gradient_fall", ("warning",), "embedding_collapse", 4),)
    needs = (("gradient_flow.model", "grad_norm"), ("loss_split", "value"))
    thresholds = {"GRAD_FALL_RATIO": GRAD_FALL_RATIO, "CHANCE_REL_TOL": CHANCE_REL_TOL}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        model_gn = series(df, "gradient_flow.model", "model", "grad_norm")
        loss = series(df, "loss_split", primary_component(df), "value")
        if len(model_gn) < 2 * END_MIN_POINTS:
            return []
        early = model_gn.iloc[: max(END_MIN_POINTS, len(model_gn) // 10)]
        late = window(model_gn)
        peak, end = float(early.max()), float(late.median())
        improved = len(loss) >= 2 and float(window(loss).mean()) < (1 - CHANCE_REL_TOL) * float(loss.iloc[0])
        if not (peak > 0 and math.isfinite(peak) and end < GRAD_FALL_RATIO * peak and not improved):
            return []
        return [Finding(
            "gradient_fall", "warning", ctx.name,
            f"the model's gradient norm fell from {peak:.3g} (peak, step {int(early.idxmax())}) to "
            f"{end:.3g} (median of steps {span(late)[0]}-{span(late)[1]}) while the loss did not improve: "
            "the loss surface went flat, not the optimum.",
            {"peak_grad_norm": rnd(peak, 8), "peak_step": int(early.idxmax()), "end_grad_norm": rnd(end, 10),
             "ratio": rnd(end / peak, 8), "window_steps": span(late)},
            "Find what saturated in the first steps (collapse, attention entropy, update/param).")]


def skipped_overflow(grads: pd.DataFrame, bad: dict) -> dict | None:
    """Gradients non-finite on a minority of steps while every loss and embedding stayed finite, and finite
    gradients observed after the last such step: the overflow never reached the weights (a NaN or Inf applied to
    a weight stays in it and in every output after). A mixed-precision loss scaler skipping the steps whose
    scaled gradients overflowed does this by design (GradScaler at its first steps, or after it grows the
    scale); it is not a divergence. The evidence of that, or None."""
    if grads.empty or bad["grad"].empty or not bad["loss"].empty or not bad["embedding"].empty:
        return None
    steps = grads.groupby("step")["value"].max()
    overflowed, last = steps[steps > 0], int(bad["grad"]["step"].max())
    after = steps[steps.index > last]
    if after.empty or len(overflowed) * 2 >= len(steps):
        return None
    return {"steps_overflowed": int(len(overflowed)), "steps_observed": int(len(steps)),
            "first_step": int(overflowed.index[0]), "last_step": last, "finite_steps_after": int(len(after))}


class NonfiniteValues(Rule):
    """NaN/Inf in gradients, losses or embeddings at any step (a gradient overflow the weights never took is a
    skipped step, reported as such: see `skipped_overflow`)."""

    topic = "gradients"
    emits = (Emit("nonfinite_values", ("error",), "nonfinite_divergence", 1),
             Emit("gradient_overflow_skipped", ("info",)))
    needs = (("gradient_flow.model", "nonfinite_grad"), ("loss_split", "nonfinite"), ("collapse", "nonfinite_rows"))

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        grads = select(df, "gradient_flow.model", "nonfinite_grad")
        bad = {key: sel[sel["value"] > 0] for key, sel in (
            ("grad", grads), ("loss", select(df, "loss_split", "nonfinite")),
            ("embedding", select(df, "collapse", "nonfinite_rows")))}
        if all(b.empty for b in bad.values()):
            return []
        skipped = skipped_overflow(grads, bad)
        if skipped:
            return [Finding(
                "gradient_overflow_skipped", "info", ctx.name,
                f"gradients held NaN/Inf on {skipped['steps_overflowed']} of {skipped['steps_observed']} observed "
                f"steps (first {skipped['first_step']}, last {skipped['last_step']}) while every loss and embedding "
                f"stayed finite, and were finite on the {skipped['finite_steps_after']} step(s) after: the overflow "
                "never reached the weights (a loss scaler skipping overflowed steps does this by design).", skipped,
                "Nothing to fix if a GradScaler steps the optimizer; otherwise check what skips those steps.")]
        steps = sorted(set().union(*(set(b["step"]) for b in bad.values())))
        ev = {"first_step": int(steps[0]), "steps_affected": len(steps),
              "nonfinite_grad_elements_first": float(bad["grad"]["value"].iloc[0]) if len(bad["grad"]) else 0.0,
              "nonfinite_loss_components": sorted(bad["loss"]["target"].unique())}
        emb = sorted(bad["embedding"]["target"].unique())
        if emb:
            ev["nonfinite_embeddings"] = emb
        return [Finding(
            "nonfinite_values", "error", ctx.name,
            f"NaN/Inf appeared at step {steps[0]} and on {len(steps)} step(s) in all "
            f"(loss components: {', '.join(ev['nonfinite_loss_components']) or 'none'}; gradients: "
            f"{'yes' if len(bad['grad']) else 'no'}{'; embeddings: ' + ', '.join(emb) if emb else ''}). "
            "Everything after that step is meaningless.", ev,
            "Look at the update/param ratio and gradient norms just before that step; lower the lr or clip.")]


class UpdateRatioHigh(Rule):
    """Per-layer update/param ratio: a step that rewrites a visible part of a layer."""

    topic = "gradients"
    emits = (Emit("update_ratio_high", ("warning",), "learning_rate_too_high", 2),)
    needs = (("gradient_flow.layer", "update_to_param"),)
    thresholds = {"UPDATE_RATIO_HIGH": UPDATE_RATIO_HIGH}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        up = select(df, "gradient_flow.layer", "update_to_param")
        up = up[up["value"].notna()]  # NaN after divergence (nonfinite_values reports it); all-NaN groups break idxmax
        # a layer that starts at exactly zero (a logit scale of 0, zero-init gates) has no scale of
        # its own yet: Adam moves it by ~lr per step, so update/param is ~1/t while it grows, which
        # says nothing about the learning rate being too high for the weights
        norms = select(df, "gradient_flow.layer", "param_norm").sort_values("step").groupby("target")["value"].first()
        up = up[~up["target"].isin(norms[norms <= 0.0].index)]
        # a layer of one scalar (a logit scale, a gate) is not a layer a step can rewrite: its relative step
        # is a temperature question (the temperature rules read it), not evidence of an lr too high
        sizes = select(df, "gradient_flow.layer", "numel").groupby("target")["value"].first()
        up = up[~up["target"].isin(sizes[sizes <= 1].index)]
        if up.empty:
            return []
        by_layer = up.groupby("target")
        peak, median = by_layer["value"].max().sort_values(ascending=False), by_layer["value"].median()
        peak_step = up.loc[by_layer["value"].idxmax()].set_index("target")["step"]
        high = peak[peak > UPDATE_RATIO_HIGH]
        if high.empty:
            return []
        lr, mult = ctx.optimizer.get("lr"), ctx.optimizer.get("matrix_lr_multiplier", 1.0)
        ev = {"threshold": UPDATE_RATIO_HIGH,
              "layers": {k: {"peak": rnd(v, 4), "at_step": int(peak_step[k]), "median": rnd(median[k], 5)}
                         for k, v in high.head(8).items()},
              "layers_above": int(len(high)), "layers_total": int(len(peak)), "lr": lr, "matrix_lr_multiplier": mult}
        return [Finding(
            "update_ratio_high", "warning", ctx.name,
            f"{len(high)} of {len(peak)} layers had an optimizer step that changed them by more than "
            f"{UPDATE_RATIO_HIGH:g} of their norm (rule of thumb ~1e-3): highest {high.index[0]}, "
            f"{high.iloc[0]:.3g} at step {int(peak_step[high.index[0]])}. At lr {lr}"
            f"{f' (x{mult:g} on weight matrices at this scale)' if mult != 1 else ''} single steps rewrite a "
            "visible part of these weights before the loss can steer them.", ev,
            "Ablate with a 10x lower learning rate (or warm-up) and compare the loss against ln(B).",
                        str(high.index[0]))]


# A scalar parameter named like a temperature (logit_scale, temperature, tau, ...)
TEMPERATURE_NAME = re.compile(r"(^|[._])(logit_?scale|temp(erature)?|tau|scale)$", re.IGNORECASE)


class ScaleUpdateHigh(Rule):
    """The temperature parameter's own steps: a scalar logit scale that moves by more than a tenth of
    itself in one step swings every logit of the batch with it (the update ratio of a scalar is its
    relative change), faster than the embeddings can follow."""

    topic = "gradients"
    emits = (Emit("scale_update_high", ("warning",), "temperature", 2),)
    needs = (("gradient_flow.layer", "numel"),)
    thresholds = {"UPDATE_RATIO_HIGH": UPDATE_RATIO_HIGH}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        sizes = select(df, "gradient_flow.layer", "numel").groupby("target")["value"].first()
        scalars = [t for t in sizes[sizes <= 1].index if TEMPERATURE_NAME.search(str(t))]
        out = []
        for name in scalars:
            up = finite(series(df, "gradient_flow.layer", name, "update_to_param"))
            norm = finite(series(df, "gradient_flow.layer", name, "param_norm"))
            if up.empty or float(up.max()) <= UPDATE_RATIO_HIGH or (len(norm) and float(norm.iloc[0]) <= 0):
                continue
            ev = {"parameter": name, "peak_update_to_param": rnd(up.max(), 4), "at_step": int(up.idxmax()),
                  "steps_above": int((up > UPDATE_RATIO_HIGH).sum()), "steps": span(up),
                  "value_first": rnd(norm.iloc[0], 4) if len(norm) else None,
                  "value_end": rnd(norm.iloc[-1], 4) if len(norm) else None, "lr": ctx.optimizer.get("lr")}
            out.append(Finding(
                "scale_update_high", "warning", ctx.name,
                f"the temperature parameter {name} changed by {up.max():.3g} of its own value in one step (step "
                f"{ev['at_step']}; |value| {ev['value_first']} -> {ev['value_end']}): every logit of the batch "
                "swings with it, faster than the embeddings can follow.", ev,
                f"Give {name} its own small lr (or freeze it), and clamp it (open_clip: exp(scale) <= 100).", name))
        return out


def peak_model_update(df: pd.DataFrame) -> float:
    up = finite(series(df, "gradient_flow.model", "model", "update_to_param"))
    return float(up.max()) if len(up) else float("nan")


class UpdateRatioLow(Rule):
    """Even the largest optimizer step barely moves the weights."""

    topic = "gradients"
    emits = (Emit("update_ratio_low", ("warning", "error"), "learning_rate_too_low", 1),
             Emit("update_only_rescales", ("warning", "error"), "learning_rate_too_low", 1))
    needs = (("gradient_flow.model", "update_to_param"),)
    thresholds = {"UPDATE_RATIO_LOW": UPDATE_RATIO_LOW}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        up = finite(series(df, "gradient_flow.model", "model", "update_to_param"))
        if len(up) < END_MIN_POINTS:
            return []
        if float(up.max()) >= UPDATE_RATIO_LOW:
            return self._only_rescales(df, ctx, up)
        peak = float(up.max())
        ev = {"peak_update_to_param": rnd(peak, 10), "at_step": int(up.idxmax()),
              "median_update_to_param": rnd(up.median(), 10),
              "threshold": UPDATE_RATIO_LOW, "steps": span(up), "lr": ctx.optimizer.get("lr"),
              "matrix_lr_multiplier": ctx.optimizer.get("matrix_lr_multiplier", 1.0)}
        return [Finding(
            "update_ratio_low", "warning" if _loss_left_chance(df) else "error", ctx.name,
            f"no optimizer step changed the model by more than {peak:.2g} of its weight norm (largest at step "
            f"{ev['at_step']}; rule of thumb ~1e-3, threshold {UPDATE_RATIO_LOW:g}): at lr {ev['lr']} the weights "
            "barely move, so the loss cannot leave its initial value in any reasonable number of steps.", ev,
            "Raise the learning rate (check its units, the schedule and any lr multiplier) and compare the loss "
            "against ln(B).")]

    def _only_rescales(self, df: pd.DataFrame, ctx: RunContext, up: pd.Series) -> list[Finding]:
        """The same threshold on the part of each step that turns the weights (`update_turn_to_param`: the update
        less its projection on each tensor), where the steps are larger: a weight decay rescales every tensor by
        lr x wd per step whatever the gradient, so it can carry the update over UPDATE_RATIO_LOW while the gradient's
        part (a gradient divided by a loss scale after clipping, an lr far too low beside a coupled decay) moves
        nothing. The model's gradient must be finite and non-zero (without one, the gradient rules speak)."""
        turn = finite(series(df, "gradient_flow.model", "model", "update_turn_to_param"))
        rescale = finite(series(df, "gradient_flow.model", "model", "update_rescale_to_param"))
        grad = finite(series(df, "gradient_flow.model", "model", "grad_norm"))
        if len(turn) < END_MIN_POINTS or float(turn.max()) >= UPDATE_RATIO_LOW or grad.empty or float(grad.min()) <= 0:
            return []
        # the rescaling of tensors of two or more elements carried the steps over the threshold: a decay, not a logit
        # scale's own step (a scalar the gradient moves while every other tensor gets none)
        if rescale.empty or float(rescale.max()) < UPDATE_RATIO_LOW:
            return []
        peak = float(turn.max())
        ev = {"peak_update_turn_to_param": rnd(peak, 10), "at_step": int(turn.idxmax()),
              "peak_update_rescale_to_param": rnd(rescale.max(), 8),
              "peak_update_to_param": rnd(up.max(), 8), "median_update_to_param": rnd(up.median(), 8),
              "median_grad_norm": rnd(grad.median(), 6), "threshold": UPDATE_RATIO_LOW, "steps": span(turn),
              "lr": ctx.optimizer.get("lr"), "weight_decay": ctx.optimizer.get("weight_decay")}
        return [Finding(
            "update_only_rescales", "warning" if _loss_left_chance(df) else "error", ctx.name,
            f"the optimizer's steps changed the weights by up to {ev['peak_update_to_param']:.2g} of their norm, but "
            f"only by rescaling each tensor (a weight decay): the part of a step that turns the weights, where the "
            f"gradient acts, never exceeded {peak:.2g} of their norm (threshold {UPDATE_RATIO_LOW:g}; gradient norm "
            f"{ev['median_grad_norm']:.3g} as observed): the gradient reaches the weights too small to move them.", ev,
            "Check what shrinks the gradient between backward and the optimizer step (clipping before a loss scaler's "
            "unscale_, a divided loss) and the learning rate; compare the loss against ln(B).")]


class WeightsShrinking(Rule):
    """The model's weight norm, or a layer's, falling to under half its initial value."""

    topic = "gradients"
    emits = (Emit("weights_shrinking", ("warning", "error"), "weight_decay_collapse", 1),)
    needs = (("gradient_flow.model", "param_norm"), ("gradient_flow.layer", "param_norm"))
    thresholds = {"PARAM_SHRINK": PARAM_SHRINK}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        pn = finite(series(df, "gradient_flow.model", "model", "param_norm"))
        if len(pn) < 2 * END_MIN_POINTS or float(pn.iloc[0]) <= 0:
            return []
        end, first = float(window(pn).mean()), float(pn.iloc[0])
        ratios = {}
        for t, g in select(df, "gradient_flow.layer", "param_norm").groupby("target"):
            g = g.sort_values("step")["value"]
            if len(g) >= 2 * END_MIN_POINTS and float(g.iloc[0]) ** 2 >= LAYER_MIN_SHARE * first ** 2:
                ratios[t] = float(g.iloc[-END_MIN_POINTS:].mean()) / float(g.iloc[0])
        shrunk = dict(sorted(((t, r) for t, r in ratios.items() if r < PARAM_SHRINK), key=lambda kv: kv[1])[:8])
        # per layer only while the model's total fell too: a layer shrinking while the rest grows (a logit
        # scale driven down by large steps, the total at 250%) is the gradients winning, not decay
        if end >= PARAM_SHRINK * first and not (shrunk and end < first):
            return []
        ev = {"param_norm_first": rnd(first), "param_norm_end": rnd(end), "ratio": rnd(end / first),
              "threshold": PARAM_SHRINK,
              "layers_shrunk": {k: rnd(v) for k, v in shrunk.items()}, "lr": ctx.optimizer.get("lr"),
              "weight_decay": ctx.optimizer.get("weight_decay"), "window_steps": span(window(pn))}
        whole = (f"the model's weight norm fell from {first:.3g} to {end:.3g} ({end / first:.0%}) during the run"
                 if end < PARAM_SHRINK * first else
                 f"{len(shrunk)} layer(s) fell under {PARAM_SHRINK:.0%} of their initial weight norm during the run ("
                 + ", ".join(f"{k} {v:.0%}" for k, v in list(shrunk.items())[:4])
                 + f"; the model's total {end / first:.0%})")
        return [Finding(
            "weights_shrinking", "warning" if _loss_left_chance(df) else "error", ctx.name,
            f"{whole}: something "
            "shrinks the weights faster than the gradients grow them (weight decay x lr too large, or a decay applied "
            "to parameters that should not decay); shrunk weight matrices leave biases to dominate the outputs.", ev,
            "Check weight_decay and lr * weight_decay per step (AdamW shrinks weights by that factor every step).")]
