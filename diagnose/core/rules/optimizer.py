"""Rules on the optimizer the user handed over, read directly (probe ``optimizer``): trainable
parameters that get gradients but sit in no param group, a learning rate that the schedule has
taken away, and float16 / bfloat16 weights whose updates round away."""

from __future__ import annotations

import pandas as pd

from ..definitions import learned, left_chance
from ..findings import Finding
from .base import Emit, Rule, RunContext, end_loss, finite, rnd, select, series, span, targets, window
from .gradients import TEMPERATURE_NAME
from .persistence import PERSIST_MIN_OBS, held_since, loss_falling, stuck

# A parameter the optimizer never steps keeps its value exactly (no update, no weight decay); a
# relative change of its norm under 1e-6 over the run is float rounding of a norm, not training.
UNMOVED_REL = 1e-6
# The lr a group has now against the highest it had in this run: at 1% of it, Adam's steps (~lr per
# element) are 100x smaller than the ones the run was set up with; what is left of the run cannot
# move the weights as intended.
LR_GONE = 1e-2


class ParamsOutsideOptimizer(Rule):
    """Trainable parameters on the loss's path (they hold gradients) that no param group contains; or, with every
    one inside, an optimizer whose steps change none of them (it steps other tensors)."""

    topic = "optimizer"
    emits = (Emit("params_outside_optimizer", ("warning", "error"), "param_not_in_optimizer", 1),
             Emit("optimizer_steps_nothing", ("error",), "param_not_in_optimizer", 1),
             # the weights do not move because no step is ever applied: of the catalogue's causes the one whose
             # mechanism this is (the weights cannot move: the effective step is zero); its message names the call
             Emit("optimizer_never_stepped", ("error",), "learning_rate_too_low", 1))
    needs = (("optimizer", "with_grad"),)
    thresholds = {"UNMOVED_REL": UNMOVED_REL, "PERSIST_MIN_OBS": PERSIST_MIN_OBS}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        n = series(df, "optimizer", "outside", "with_grad")
        if n.empty or float(n.iloc[-1]) <= 0:
            return _steps_nothing(df, ctx)
        named = select(df, "optimizer", "outside_optimizer_numel")
        names = list(dict.fromkeys(named[named["step"] == named["step"].max()]["target"])) if len(named) else []
        moved = {}
        for name in names:
            norm = finite(series(df, "gradient_flow", name, "param_norm"))
            if len(norm) >= 2 and float(norm.iloc[0]) > 0:
                moved[name] = abs(float(norm.iloc[-1]) / float(norm.iloc[0]) - 1.0)
        if moved and max(moved.values()) > UNMOVED_REL:
            return []  # something else steps them (a second optimizer): not this fault
        numel = series(df, "optimizer", "outside", "numel_with_grad")
        mean, ln_b = end_loss(df)
        severity = "warning" if learned(mean, ln_b) else "error"
        intent = _intent(df, n)
        ev = {"parameters": names, "count": int(n.iloc[-1]), "numel": int(numel.iloc[-1]) if len(numel) else None,
              "relative_norm_change": {k: rnd(v, 9) for k, v in moved.items()}, "steps": span(n),
              "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b), **intent}
        shown = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
        return [Finding(
            "params_outside_optimizer", severity, ctx.name,
            (f"{int(n.iloc[-1])} trainable parameter tensors ({ev['numel']} values: {shown}) receive gradients but are "
             "in no param group of the optimizer: they are on the loss's path and never change "
             f"(relative norm change {max(moved.values()):.1g})." if moved else
             f"{int(n.iloc[-1])} trainable parameter tensors ({shown}) receive gradients but are in no param group "
             "of the optimizer: nothing steps them.") + _intent_sentence(intent), ev,
            "Build the optimizer after every module exists and from model.parameters() (or add_param_group); "
            "if they are meant to stay fixed, set requires_grad=False.", names[0] if names else "outside")]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        if finding.id in ("optimizer_steps_nothing", "optimizer_never_stepped"):
            return True  # a direct reading over PERSIST_MIN_OBS steps that no working optimizer gives (see below)
        # The reading alone waits for the loss to stop falling (rules.persistence): a backbone left trainable but
        # kept out of the optimizer on purpose (`AdamW(projector.parameters())`, a common way to freeze) reads the
        # same and learns; alarming from it (tried) stopped such a run at its sixth observation. Two readings say
        # the parameters were meant to train, and no healthy run shows them, so they alarm once they held
        # PERSIST_MIN_OBS observations: parameters that became trainable during the run (requires_grad set after
        # the optimizer was built and never added to it), an optimizer whose tensors are not this model's and
        # get no gradient (built on another instance: a model rebuilt or reloaded afterwards), and an optimizer that
        # holds nothing but single values (a logit scale: built before the layers existed).
        n = series(df, "optimizer", "outside", "with_grad")
        ev = finding.evidence
        if "trainable_from_step" in ev or "stale_tensors" in ev or "only_scalars_inside" in ev:
            since = ev.get("trainable_from_step", int(n.index[0]))
            return int((n[n.index >= since] > 0).sum()) >= PERSIST_MIN_OBS
        return stuck(df, n > 0)


def _steps_nothing(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
    """The model's update/param exactly 0 on every measured step (PERSIST_MIN_OBS or more) while its gradient is
    finite and non-zero and every group's lr is positive, with float32 weights: an optimizer step with lr > 0 and
    a gradient always changes some weight, so the optimizer steps tensors that are not these (a wrapper whose base
    optimizer was replaced by a stale copy on resume, an optimizer built on a copy of the model). Float16/bfloat16
    weights are left to updates_rounded_away (their updates can round away)."""
    up = finite(series(df, "gradient_flow.model", "model", "update_to_param"))
    grad = finite(series(df, "gradient_flow.model", "model", "grad_norm")).reindex(up.index)
    low = finite(series(df, "gradient_flow.model", "model", "low_precision_share"))
    if len(up) < PERSIST_MIN_OBS or bool((up != 0).any()) or grad.isna().any() or not bool((grad > 0).all()):
        return []
    if len(low) and float(low.max()) > 0:
        return []
    lrs = {}
    for g in targets(df, "optimizer", "lr"):
        params = series(df, "optimizer", g, "params")
        if len(params) and float(params.iloc[-1]) == 0:
            continue
        lr = finite(series(df, "optimizer", g, "lr"))
        if lr.empty or float(lr.min()) <= 0:
            return []
        lrs[g] = float(lr.iloc[-1])
    if not lrs or not _step_representable(df, min(lrs.values()), float(grad.median())):
        return []
    mean, ln_b = end_loss(df)
    ev = {"measured_steps": int(len(up)), "steps": span(up), "update_to_param_max": 0.0,
          "grad_norm_median": rnd(float(grad.median())), "lr": lrs, "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b)}
    called = finite(series(df, "optimizer", "optimizer", "steps_called"))
    if len(called) and float(called.iloc[-1]) == 0:
        return [_never_stepped(ctx, ev, len(called))]
    return [Finding(
        "optimizer_steps_nothing", "error", ctx.name,
        f"on all {len(up)} measured steps ({ev['steps'][0]}-{ev['steps'][1]}) optimizer.step() left every parameter "
        f"of the model exactly as it was (update/param 0), although the gradient is finite and non-zero (median "
        f"norm {ev['grad_norm_median']:.3g}) and every group's lr is positive: the optimizer steps tensors that are "
        "not this model's parameters.", ev,
        "Check what the optimizer really updates: a wrapper optimizer (SAM-style) whose base optimizer lives in its "
        "state is replaced by load_state_dict with a stale copy; an optimizer built on a copy of the model. Rebuild "
        "it on model.parameters() after loading, and load the base optimizer's state separately.", "model")]


# float32 has 23 mantissa bits: a step under ~2^-20 of a weight's size (8 units in its last place) can round back to
# the weight; an lr that small is too low an lr (updates_rounded_away's mechanism), not an optimizer stepping elsewhere
REPRESENTABLE_STEP = 2.0 ** -20


def _never_stepped(ctx: RunContext, ev: dict, observations: int) -> Finding:
    """The optimizer's step post-hook never ran: optimizer.step() was not called at all (a scheduler's step put in
    its place, a step under a condition that never holds), so nothing can have moved the weights."""
    ev = {**ev, "steps_called": 0, "observations": observations}
    return Finding(
        "optimizer_never_stepped", "error", ctx.name,
        f"optimizer.step() never ran in the {observations} observed steps ({ev['steps'][0]}-{ev['steps'][1]}; its "
        f"post-hook counted 0 calls): the gradients are computed (median norm {ev['grad_norm_median']:.3g}) and "
        "every group's lr is positive, but no update is ever applied, and no weight of the model changed (update/param "
        "0 on all measured steps).", ev,
        "Call optimizer.step() after every backward (or scaler.step(optimizer) under a GradScaler); a scheduler's "
        "step() only changes the lr, and belongs after the optimizer's.", "model")


def _step_representable(df: pd.DataFrame, lr: float, grad_norm: float) -> bool:
    """The step one element would take, the larger of Adam's (~lr) and SGD's (lr x the gradient's rms), is well
    above float32 rounding of the weights' rms."""
    norm = finite(series(df, "gradient_flow.model", "model", "param_norm"))
    numel = finite(series(df, "gradient_flow.model", "model", "numel"))
    if norm.empty or numel.empty or float(numel.iloc[-1]) <= 0:
        return False
    root = float(numel.iloc[-1]) ** 0.5
    return max(lr, lr * grad_norm / root) >= REPRESENTABLE_STEP * float(norm.iloc[-1]) / root


def _intent(df: pd.DataFrame, n: pd.Series) -> dict:
    """Evidence that the parameters outside every group were meant to train: the step they became trainable
    (none held a gradient at the first observation, then some did until now), and optimizer tensors that are
    not this model's and get no gradient (a stale optimizer)."""
    out: dict = {}
    trainable = series(df, "optimizer", "outside", "trainable")
    since = held_since(n > 0)
    # nothing outside was trainable at the first observation (requires_grad False then): a gradient missing at a
    # first observe called before backward is not this
    if since is not None and len(trainable) and float(trainable.iloc[0]) == 0 and since > int(trainable.index[0]):
        out["trainable_from_step"] = since
    tensors, with_grad = (series(df, "optimizer", "foreign", m) for m in ("tensors", "with_grad"))
    if len(tensors) and len(with_grad) and float(tensors.iloc[-1]) > 0 and float(with_grad.iloc[-1]) == 0:
        out["stale_tensors"] = int(tensors.iloc[-1])
    scalars = _only_scalars_inside(df)
    if scalars is not None:
        out["only_scalars_inside"] = scalars
    return out


def _only_scalars_inside(df: pd.DataFrame) -> int | None:
    """The number of trainable tensors the optimizer holds when every one of them is a single value (a logit
    scale): no weight of any layer can change, whatever is outside (an optimizer built before the layers existed).
    A model trained through its temperature alone is not a training setup any healthy run has; a tower locked on
    purpose leaves the other tower's weights inside. None otherwise."""
    tensors = numel = 0.0
    for g in targets(df, "optimizer", "params"):
        p, n = finite(series(df, "optimizer", g, "params")), finite(series(df, "optimizer", g, "numel"))
        if p.empty or n.empty:
            return None
        tensors, numel = tensors + float(p.iloc[-1]), numel + float(n.iloc[-1])
    return int(tensors) if 0 < tensors and numel == tensors else None


def _intent_sentence(intent: dict) -> str:
    said = ""
    if "trainable_from_step" in intent:
        said += (f" They hold gradients from step {intent['trainable_from_step']} on (set trainable during the run, "
                 "after the optimizer was built) and were never added to it.")
    if "stale_tensors" in intent:
        said += (f" The optimizer steps {intent['stale_tensors']} tensors that are not this model's parameters and "
                 "never get a gradient: it was built on another instance (a model rebuilt or reloaded after the "
                 "optimizer was created).")
    if "only_scalars_inside" in intent:
        said += (f" The optimizer holds only {intent['only_scalars_inside']} single-value tensor(s) (a temperature): "
                 "no weight of any layer can change (an optimizer built before the layers existed?).")
    return said


class LearningRateGone(Rule):
    """The lr every param group has now against the highest it had: a schedule that reached zero."""

    topic = "optimizer"
    emits = (Emit("lr_schedule_gone", ("error",), "lr_schedule", 1),
             Emit("lr_restored_low", ("error",), "learning_rate_too_low", 1))
    needs = (("optimizer", "lr"),)
    thresholds = {"LR_GONE": LR_GONE}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        groups = {}
        for g in targets(df, "optimizer", "lr"):
            params = series(df, "optimizer", g, "params")
            if len(params) and float(params.iloc[-1]) == 0:
                continue  # a group with nothing trainable in it
            lr = finite(series(df, "optimizer", g, "lr"))
            initial = finite(series(df, "optimizer", g, "lr_initial"))
            if lr.empty:
                continue
            peak = max(float(lr.max()), float(initial.max()) if len(initial) else 0.0)
            w = window(lr)
            if float(w.iloc[-1]) > float(w.iloc[0]):
                return []  # rising: a warm-up on its way up, not a schedule that ended
            groups[g] = (float(w.max()), peak, lr)
        if not groups or any(peak <= 0 or end > LR_GONE * peak for end, peak, _ in groups.values()):
            return []
        mean, ln_b = end_loss(df)
        if learned(mean, ln_b):
            return []  # a schedule that ends at zero after the run learned is the schedule working
        if self._restored(df, groups):
            return self._restored_finding(df, ctx, groups, mean, ln_b)
        first_gone = {g: int(lr[lr <= LR_GONE * peak].index[0]) for g, (_, peak, lr) in groups.items()}
        up = finite(series(df, "gradient_flow.model", "model", "update_to_param"))
        ev = {"groups": {g: {"lr_end": end, "lr_peak": peak, "gone_from_step": first_gone[g]}
                         for g, (end, peak, _) in groups.items()},
              "threshold_share_of_peak": LR_GONE, "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b)}
        if len(up):
            ev["update_to_param_end"] = rnd(window(up).mean(), 8)
            ev["update_to_param_peak"] = rnd(up.max(), 8)
        g0 = next(iter(groups))
        return [Finding(
            "lr_schedule_gone", "error", ctx.name,
            f"the learning rate of every param group is at most {LR_GONE:g} of its peak over the last steps "
            f"({g0}: {groups[g0][0]:.3g} vs {groups[g0][1]:.3g}, from step {first_gone[g0]}) while the loss is not "
            f"learned ({mean:.4f} vs ln(B) = {ln_b:.4f}): the schedule took the lr away before the model learned"
            + (f"; the model's update/param fell to {ev['update_to_param_end']:.2g} "
               f"(peak {ev['update_to_param_peak']:.2g})."
               if len(up) else "."), ev,
            "Check the scheduler's length (total steps vs epochs, steps per epoch, gradient accumulation) and that "
            "scheduler.step() is called once per optimizer step.", g0)]

    @staticmethod
    def _restored(df: pd.DataFrame, groups: dict) -> bool:
        """No schedule acts in this run (no torch scheduler wraps the optimizer's step) and the lr never changed:
        the low lr was not taken away here, it came in with the optimizer's state (load_state_dict restores the
        param groups, lr included) or was set so; the schedule that lowered it ran before this run."""
        attached = finite(series(df, "optimizer", "optimizer", "scheduler_attached"))
        if attached.empty or float(attached.max()) > 0:
            return False
        return all(float(lr.max()) == float(lr.min()) for _, _, lr in groups.values())

    @staticmethod
    def _restored_finding(df: pd.DataFrame, ctx: RunContext, groups: dict, mean: float, ln_b: float) -> list[Finding]:
        ev = {"groups": {g: {"lr_end": end, "lr_peak": peak, "gone_from_step": int(lr.index[0])}
                         for g, (end, peak, lr) in groups.items()},
              "scheduler_attached": False, "threshold_share_of_peak": LR_GONE, "loss_end": rnd(mean),
              "chance_ln_B": rnd(ln_b)}
        g0 = next(iter(groups))
        end, peak, _ = groups[g0]
        return [Finding(
            "lr_restored_low", "error", ctx.name,
            f"every param group runs at a constant lr of at most {LR_GONE:g} of the lr it carries as its start "
            f"({g0}: {end:.3g} vs initial_lr {peak:.3g}) from the first observed step, no scheduler is attached to "
            f"this optimizer and the loss is not learned ({mean:.4f} vs ln(B) = {ln_b:.4f}): the lr in effect is too "
            "low, and it came in with the optimizer's state (load_state_dict restores the param groups, lr included: a "
            "schedule that ended before this run) or was set that way.", ev,
            "Set the lr again after optimizer.load_state_dict (for g in optimizer.param_groups: g['lr'] = lr), or "
            "restore the scheduler too when the run is meant to continue its schedule.", g0)]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        # the weights cannot move without an lr, so persistence is counted in observations here
        gone = None
        for g, info in finding.evidence["groups"].items():
            lr = series(df, "optimizer", g, "lr")
            h = lr <= LR_GONE * info["lr_peak"]
            gone = h if gone is None else (gone & h.reindex(gone.index, fill_value=False))
        since = held_since(gone) if gone is not None else None
        return (since is not None and int((gone.index >= since).sum()) >= PERSIST_MIN_OBS
                and not loss_falling(df, since))


# Weights stored in float16 / bfloat16 (probe gradient_flow.model, low_precision_*): an optimizer update under
# half the spacing of neighbouring numbers rounds back to the old weight. Adam's first steps move every element
# by ~lr (sign-like), so the share of elements those steps leave bit-identical measures lr against the weights'
# precision directly: over half of them means most of every step is lost. The early readings are the measure
# (later, Adam's steps shrink with noisy gradients in any run that has learned, and the share rises there too).
ROUNDED_AWAY, ROUNDED_EARLY_READINGS, LOW_PRECISION_MAJORITY = 0.5, 5, 0.5


class UpdatesRoundedAway(Rule):
    """Most float16 / bfloat16 weight elements left bit-identical by the early optimizer steps."""

    topic = "optimizer"
    emits = (Emit("updates_rounded_away", ("warning", "error"), "learning_rate_too_low", 1),)
    needs = (("gradient_flow.model", "low_precision_unchanged_frac"),)
    thresholds = {"ROUNDED_AWAY": ROUNDED_AWAY, "ROUNDED_EARLY_READINGS": ROUNDED_EARLY_READINGS,
                  "LOW_PRECISION_MAJORITY": LOW_PRECISION_MAJORITY}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        same = finite(series(df, "gradient_flow.model", "model", "low_precision_unchanged_frac"))
        share = finite(series(df, "gradient_flow.model", "model", "low_precision_share"))
        if len(same) < ROUNDED_EARLY_READINGS or share.empty or float(share.iloc[-1]) < LOW_PRECISION_MAJORITY:
            return []
        early = float(same.iloc[:ROUNDED_EARLY_READINGS].median())
        if early < ROUNDED_AWAY:
            return []
        first = int(same.index[0])
        not_learning = len(same) >= PERSIST_MIN_OBS and not loss_falling(df, first) and not learned(*end_loss(df))
        lr = ctx.optimizer.get("lr")
        ev = {"unchanged_share_early": rnd(early), "unchanged_share_end": rnd(float(same.iloc[-1])),
              "low_precision_share": rnd(float(share.iloc[-1])), "steps": span(same), "lr": lr,
              "threshold": ROUNDED_AWAY}
        return [Finding(
            "updates_rounded_away", "error" if not_learning else "warning", ctx.name,
            f"{early:.0%} of the weight elements (stored in float16 / bfloat16: {float(share.iloc[-1]):.0%} of the "
            f"trainable ones) came out of the first optimizer steps bit-identical: at lr {lr} each update is under "
            "half the spacing between neighbouring numbers of that precision and rounds back to the old weight, so "
            "most of every step is lost" + (" and the loss has not come down" if not_learning else "") + ".", ev,
            "Keep float32 master weights (autocast for the compute, or the optimizer's own fp32 copy) or raise "
            "the learning rate; compare the share of unchanged elements after the change.")]


# Adam's step per element is lr * m / (sqrt(v) + eps) (RMSprop's lr * g / (sqrt(v) + eps)): the denominator
# normalises the step to ~lr whatever the gradient's scale, which is what the lr was chosen for. Where eps is
# EPS_DOMINATES times the gradient scale sqrt(v) (its RMS over the group, which the largest gradients dominate:
# most elements sit further below), eps is the denominator and every step is at most a tenth of that lr-sized
# step: the optimizer runs a decade or more below its lr (Adam becomes SGD at lr / eps), one decade being the
# granularity lr sweeps and the lr_down / lr_up ablations move by. Held over the last PERSIST_MIN_OBS readings; no
# state at initialisation reads like it (unlike a loss at chance), so its alarm needs no more (as update_ratio_low):
# the standard gate waits for the weights to move by their norm, which is what an eps like this keeps them from.
EPS_DOMINATES = 10.0


class EpsDominatesStep(Rule):
    """A param group whose optimizer eps is many times the gradient scale it was meant to normalise."""

    topic = "optimizer"
    emits = (Emit("eps_dominates_step", ("warning", "error"), "learning_rate_too_low", 1),)
    needs = (("optimizer", "adaptive_rms"),)
    thresholds = {"EPS_DOMINATES": EPS_DOMINATES}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        out = []
        for target in targets(df, "optimizer", "adaptive_rms"):
            rms = finite(series(df, "optimizer", target, "adaptive_rms"))
            eps = finite(series(df, "optimizer", target, "eps")).reindex(rms.index).ffill()
            holds = (eps >= EPS_DOMINATES * rms) & (rms > 0)
            since = held_since(holds)
            if since is None or int((holds.index >= since).sum()) < PERSIST_MIN_OBS:
                continue
            at = rms[rms.index >= since]
            share = float((at / (at + eps[at.index])).median())  # the step's share of Adam's lr-sized step
            at_chance = not left_chance(*end_loss(df))  # as update_ratio_low, the same cause's other reading
            lr = series(df, "optimizer", target, "lr")
            ev = {"eps": rnd(float(eps.iloc[-1]), 10), "adaptive_rms_median": rnd(float(at.median()), 10),
                  "step_share": rnd(share), "since_step": since, "readings": len(at), "steps": span(at),
                  "lr": rnd(float(lr.iloc[-1]), 10) if len(lr) else None, "threshold": EPS_DOMINATES}
            out.append(Finding(
                "eps_dominates_step", "error" if at_chance else "warning", ctx.name,
                f"{target}: the optimizer's eps ({ev['eps']:g}) is {float(eps.iloc[-1]) / float(at.median()):.0f}x "
                f"the gradient scale it divides by (RMS of sqrt(v) {float(at.median()):.2g} over steps "
                f"{since}-{int(at.index[-1])}): the denominator sqrt(v) + eps is eps, so each step is ~{share:.1%} "
                f"of the lr-sized step the lr was set for (an effective lr ~{1 / max(share, 1e-12):.0f}x lower)"
                + (" and the loss is still at chance" if at_chance else "") + ".", ev,
                "Use the optimizer's default eps (1e-8 for Adam/AdamW) or one well below the gradients' scale; "
                "compare the update/param ratio after the change.", target))
        return out


# An L2 weight decay added to the gradient (Adam, SGD, RMSprop with weight_decay; not AdamW's decoupled decay)
# enters the step as g + wd * w. Where ||wd * w|| is ten times ||g|| for a param group, the direction the
# optimizer takes (Adam normalises it per element) is the decay's: the contrastive gradient is a tenth of it and
# the weights are pulled to zero before they can follow it. Read on the early steps (DECAY_EARLY_READINGS):
# later the shrunken weights bring the two terms level whatever the cause.
DECAY_DOMINATES, DECAY_EARLY_READINGS = 10.0, 10


class DecayDominatesGradient(Rule):
    """A param group whose coupled (L2) weight-decay term is many times its gradient."""

    topic = "optimizer"
    emits = (Emit("decay_dominates_gradient", ("warning", "error"), "weight_decay_collapse", 1),)
    needs = (("optimizer", "optimizer_group"), ("gradient_flow", "grad_norm"))
    thresholds = {"DECAY_DOMINATES": DECAY_DOMINATES, "DECAY_EARLY_READINGS": DECAY_EARLY_READINGS}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        members = select(df, "optimizer", "optimizer_group").groupby("target")["value"].last()
        if members.empty:
            return []
        out = []
        for target in targets(df, "optimizer", "weight_decay"):
            wd = finite(series(df, "optimizer", target, "weight_decay"))
            coupled = finite(series(df, "optimizer", target, "decoupled"))
            index = finite(series(df, "optimizer", target, "index"))
            if wd.empty or index.empty or float(wd.iloc[-1]) <= 0 or coupled.empty or float(coupled.iloc[-1]) != 0:
                continue
            names = list(members[members == float(index.iloc[-1])].index)
            ratio = self._ratio(df, names, float(wd.iloc[-1]))
            if len(ratio) < PERSIST_MIN_OBS:
                continue
            early = float(ratio.iloc[:DECAY_EARLY_READINGS].median())
            if not early > DECAY_DOMINATES:
                continue
            learning = learned(*end_loss(df)) or loss_falling(df, int(ratio.index[0]))
            ev = {"group": target, "weight_decay": rnd(float(wd.iloc[-1]), 6), "decay_to_gradient_early": rnd(early),
                  "decay_to_gradient_end": rnd(float(ratio.iloc[-1])), "parameters": len(names),
                  "steps": span(ratio), "threshold": DECAY_DOMINATES}
            out.append(Finding(
                "decay_dominates_gradient", "warning" if learning else "error", ctx.name,
                f"in param group {target} the weight-decay term (weight_decay {ev['weight_decay']:g}, added to the "
                f"gradient as an L2 penalty) is {early:.3g}x the gradient itself over the first steps: the step the "
                "optimizer takes is the decay's, which pulls these weights to zero faster than the contrastive "
                "gradient can steer them.", ev,
                "Use a decay sized for this optimizer (L2 with Adam: ~1e-4 or less), or AdamW's decoupled decay at "
                "0.01-0.1; compare the weights' norm after the change.", target))
        return out

    @staticmethod
    def _ratio(df: pd.DataFrame, names: list[str], wd: float) -> pd.Series:
        """||wd * w|| / ||g|| of the group per measured step, from the per-parameter norms."""
        rows = select(df, "gradient_flow")
        rows = rows[rows["target"].isin(names) & rows["metric"].isin(("param_norm", "grad_norm"))]
        if rows.empty:
            return pd.Series(dtype=float)
        sq = rows.assign(value=rows["value"] ** 2).pivot_table(index="step", columns="metric", values="value",
                                                                aggfunc="sum")
        if "grad_norm" not in sq or "param_norm" not in sq:
            return pd.Series(dtype=float)
        ratio = wd * (sq["param_norm"] ** 0.5) / (sq["grad_norm"] ** 0.5)
        return finite(ratio[sq["grad_norm"] > 0])


# A temperature parameter (logit_scale, temperature, tau) in a param group with weight decay: decoupled decay
# shrinks it by lr * wd per step towards 0 (scale exp(0) = 1: a softmax that cannot be confident), L2 decay
# adds wd * value to its gradient. Where its magnitude ends TEMPERATURE_DECAYED below its start the decay is
# winning over the gradient that would hold or raise it; a smaller drift is within what training moves it.
TEMPERATURE_DECAYED = 0.9


class TemperatureDecayed(Rule):
    """The temperature parameter sits in a decayed param group and is shrinking."""

    topic = "optimizer"
    emits = (Emit("temperature_decayed", ("warning",), "weight_decay_collapse", 1),)
    needs = (("optimizer", "optimizer_group"), ("gradient_flow", "param_norm"))
    thresholds = {"TEMPERATURE_DECAYED": TEMPERATURE_DECAYED}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        members = select(df, "optimizer", "optimizer_group").groupby("target")["value"].last()
        names = [n for n in members.index if TEMPERATURE_NAME.search(str(n))]
        out = []
        for name in names:
            value = finite(series(df, "gradient_flow", name, "param_norm"))
            if len(value) < PERSIST_MIN_OBS or float(value.iloc[0]) <= 0:
                continue
            end = float(value.iloc[-END_POINTS:].mean())
            if end >= TEMPERATURE_DECAYED * float(value.iloc[0]):
                continue
            group = int(members[name])
            others = int((members == group).sum()) - 1
            wd = _group_value(df, group, "weight_decay")
            share = _decay_share(df, name, group, wd, value)
            if not share > DECAY_EXPLAINS:
                continue  # the gradient steps moved it (an lr too high drives a scale down too), not the decay
            ev = {"parameter": name, "value_first": rnd(float(value.iloc[0])), "value_end": rnd(end),
                  "group_index": group, "weight_decay": rnd(wd, 6), "other_decayed_parameters": others,
                  "decay_to_step": rnd(share, 3), "steps": span(value), "threshold": TEMPERATURE_DECAYED}
            out.append(Finding(
                "temperature_decayed", "warning", ctx.name,
                f"the temperature parameter {name} is in a param group with weight decay {wd:g} and its magnitude "
                f"fell from {ev['value_first']:.4g} to {end:.4g}: the decay pulls it towards 0 faster than the "
                "gradient holds it (a log logit scale towards a scale of 1, a softmax that cannot be confident; "
                "a temperature towards ever sharper logits)"
                + (f"; {others} other parameter(s) share that group" if others else "") + ".", ev,
                "Put the temperature (and gains and biases: parameters with < 2 dims) in a group with "
                "weight_decay=0, as open_clip does.", name))
        return out


END_POINTS = 3
# Which of the two moves the scalar: decoupled decay (AdamW) takes lr * wd * |value| per step, while Adam's own
# step on a scalar is at most ~lr (|m / sqrt(v)| <= ~1), so the decay wins where wd * |value| > 1 whatever the
# lr (an lr too high drives a scale down with large gradient steps under a small decay: 0.1 * 2.66 < 1); an L2
# term wd * value added to the gradient wins where it exceeds the scalar's own gradient.
DECAY_EXPLAINS = 1.0


def _decay_share(df: pd.DataFrame, name: str, group: int, wd: float, value: pd.Series) -> float:
    """How much larger the decay's pull on `name` is than what else moves it, at the start (> 1: the decay)."""
    if not wd > 0:
        return 0.0
    if _group_value(df, group, "decoupled") == 1.0:
        return wd * abs(float(value.iloc[0]))
    grad = finite(series(df, "gradient_flow", name, "grad_norm")).reindex(value.index)
    ratio = (wd * value / grad).dropna()
    return float(ratio.iloc[:PERSIST_MIN_OBS].median()) if len(ratio) else float("nan")



def _group_value(df: pd.DataFrame, index: int, metric: str) -> float:
    for target in targets(df, "optimizer", "index"):
        idx = finite(series(df, "optimizer", target, "index"))
        if len(idx) and int(idx.iloc[-1]) == index:
            v = finite(series(df, "optimizer", target, metric))
            return float(v.iloc[-1]) if len(v) else float("nan")
    return float("nan")


# The share of the weights SGD's L2 decay alone removes per step (probe optimizer: lr x wd / (1 - momentum) once the
# momentum buffer built up; other optimizers are not read: decoupled lr x wd is large whenever the lr is). Recipes
# that train: MoCo's SGD 0.03 x 1e-4 / 0.1 = 3e-5, ImageNet's 0.1 x 5e-4 / 0.1 = 5e-4. At 1e-2 the decay alone
# takes e^-1 of every weight in 100 steps, 20x the faster of them: the gradient has to rebuild the weights as fast
# as they vanish (an AdamW decay carried over to SGD with momentum: 0.2 x 0.1 / 0.1 = 0.2).
DECAY_RATE_MAX = 1e-2


class DecayShrinksWeights(Rule):
    """A param group whose weight decay alone removes a large share of the weights at every step."""

    topic = "optimizer"
    emits = (Emit("decay_shrinks_weights", ("warning", "error"), "weight_decay_collapse", 1),)
    needs = (("optimizer", "decay_per_step"),)
    thresholds = {"DECAY_RATE_MAX": DECAY_RATE_MAX}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        mean, ln_b = end_loss(df)
        pn = finite(series(df, "gradient_flow.model", "model", "param_norm"))
        out = []
        for target in targets(df, "optimizer", "decay_per_step"):
            params = series(df, "optimizer", target, "params")
            rate = finite(series(df, "optimizer", target, "decay_per_step"))
            if len(rate) < PERSIST_MIN_OBS or (len(params) and float(params.iloc[-1]) == 0):
                continue
            median = float(rate.median())
            if median < DECAY_RATE_MAX:
                continue
            ev = {"group": target, "decay_per_step_median": rnd(median, 6), "decay_per_step_max": rnd(rate.max(), 6),
                  "e_fold_steps": rnd(1.0 / median, 1), "weight_decay": rnd(_last(df, target, "weight_decay"), 6),
                  "lr": rnd(_last(df, target, "lr"), 6),
                  "threshold": DECAY_RATE_MAX, "steps": span(rate), "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b)}
            if len(pn) >= 2:
                ev["model_param_norm_first"], ev["model_param_norm_end"] = rnd(pn.iloc[0]), rnd(pn.iloc[-1])
            how = "lr x weight_decay / (1 - momentum): SGD's L2 term once its momentum built up"
            out.append(Finding(
                "decay_shrinks_weights", "warning" if learned(mean, ln_b) else "error", ctx.name,
                f"in param group {target} the weight decay alone removes {median:.2g} of every weight per step "
                f"({how}; lr {ev['lr']:g}, weight_decay {ev['weight_decay']:g}): it erases e^-1 of the weights every "
                f"{1.0 / median:.0f} steps, {median / DECAY_RATE_MAX:.0f}x the {DECAY_RATE_MAX:g} above which no "
                "training recipe decays"
                + (f" (the model's weight norm {ev['model_param_norm_first']:.3g} -> {ev['model_param_norm_end']:.3g})"
                   if "model_param_norm_end" in ev else "") + ".", ev,
                "Size the decay for SGD: ~1e-4 to 5e-4 (a decay copied from an AdamW recipe is 100-1000x too strong "
                "for SGD), and exclude the temperature, biases and norms.",
                target))
        return out

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        rate = series(df, "optimizer", finding.target, "decay_per_step")
        return stuck(df, rate >= DECAY_RATE_MAX)


# A schedule that keeps its peak in the param group (OneCycleLR, CyclicLR: max_lr) changes the lr at every
# optimizer step it is stepped. An lr at most SCHEDULE_PEAK_SHARE of that peak at every observation, and unchanged
# over the last PERSIST_MIN_OBS of them, is the schedule not being stepped per batch: the run trains at its
# starting lr (OneCycleLR: max_lr / 25). Stepped per batch, its warm-up changes the lr between any two steps.
SCHEDULE_PEAK_SHARE = 0.1
# ... or one stepped per epoch: it changes the lr only every 1 / SCHEDULE_PACE_SHARE observations or more (the
# schedule runs at least 4x slower than it was laid out) and by the run's end has given at most
# SCHEDULE_SLOW_PEAK_SHARE of its peak: a warm-up stretched 4x reaches under a quarter of it in the time it was
# planned to take. The same reading, with a scheduler attached, against the lr the optimizer was built with (a
# warm-up written in optimizer steps and stepped per epoch: lr_schedule_slow)
SCHEDULE_PACE_SHARE, SCHEDULE_SLOW_PEAK_SHARE = 0.25, 0.25
# A warm-up that starts over: the lr falls back to its floor (within RESET_REL of the lowest lr used) at every
# decrease, RESTARTS_MIN times or more (one fall could be a schedule's end and a new phase; two are a cycle)
RESET_REL, RESTARTS_MIN = 0.1, 2


def _pace(lr: pd.Series) -> float:
    """The share of consecutive observations between which the lr changed."""
    return float((lr.diff().iloc[1:] != 0).mean()) if len(lr) > 1 else 0.0


def _group_lrs(df: pd.DataFrame, resumed: bool = False):
    """(group, its lr per observation, the lr it was built with) for each param group holding trainable tensors: the
    larger of its lr at the watch's start and its initial_lr (with `resumed`, the lr at the start alone: a resumed
    optimizer's initial_lr is the first run's setting, not the lr it had reached)."""
    for g in targets(df, "optimizer", "lr"):
        params = series(df, "optimizer", g, "params")
        if len(params) and float(params.iloc[-1]) == 0:
            continue
        start = finite(series(df, "optimizer", g, "lr_start"))
        initial = finite(series(df, "optimizer", g, "lr_initial"))
        ref = max(float(start.max()) if len(start) else 0.0,
                  float(initial.max()) if len(initial) and not resumed else 0.0)
        yield g, finite(series(df, "optimizer", g, "lr")), ref


def _stepped_slowly(lr: pd.Series) -> bool:
    """The lr changed, and never sooner than 1 / SCHEDULE_PACE_SHARE observations after the start or after its last
    change: a schedule stepped once per epoch (or every few steps). One stepped per optimizer step changes it at
    consecutive observations while it moves, even if it then holds (a warm-up that ends, a factor applied twice)."""
    changed = [i for i in range(1, len(lr)) if lr.iloc[i] != lr.iloc[i - 1]]
    gaps = [b - a for a, b in zip([0, *changed], changed)]
    return bool(changed) and min(gaps) >= round(1 / SCHEDULE_PACE_SHARE)


class LrBelowSchedulePeak(Rule):
    """The lr held far below the peak of a schedule that should be moving it every step, or, whatever sets it (a
    scheduler, a line in the loop), far below the lr the optimizer was built with for the whole run."""

    topic = "optimizer"
    # lr_below_start reads an lr that changes over the run (something sets it each step) and never comes near the
    # built one: the lr in effect is too low (the error); where it still rises at the end, a warm-up the run never
    # finishes (its length, or a progress divided by the total twice) is the second place to look (the warning
    # beside it: the same reading, the schedule's side, which lr_schedule_gone leaves alone while the lr rises)
    # lr_below_schedule_peak: the schedule does not advance at the optimizer's pace (a OneCycleLR / CyclicLR stepped
    # per epoch, or never): the schedule's stepping is the mechanism, the lr too low what it does (the warning
    # beside it, which it explains: the lr in effect is a small share of the one the schedule plans)
    emits = (Emit("lr_below_schedule_peak", ("error",), "lr_schedule", 1, explains=("learning_rate_too_low",)),
             Emit("lr_in_effect_below_peak", ("warning",), "learning_rate_too_low", 2),
             Emit("lr_below_start", ("error",), "learning_rate_too_low", 1),
             Emit("lr_schedule_restarted", ("error",), "lr_schedule", 1, explains=("learning_rate_too_low",)),
             Emit("lr_warmup_restarts", ("error",), "lr_schedule", 1, explains=("learning_rate_too_low",)),
             Emit("lr_schedule_holds_low", ("warning",), "lr_schedule", 2),
             Emit("lr_schedule_slow", ("error",), "lr_schedule", 1, explains=("learning_rate_too_low",)))
    needs = (("optimizer", "lr"),)
    thresholds = {"SCHEDULE_PEAK_SHARE": SCHEDULE_PEAK_SHARE, "SCHEDULE_PACE_SHARE": SCHEDULE_PACE_SHARE,
                  "SCHEDULE_SLOW_PEAK_SHARE": SCHEDULE_SLOW_PEAK_SHARE, "PERSIST_MIN_OBS": PERSIST_MIN_OBS,
                  "RESET_REL": RESET_REL, "RESTARTS_MIN": RESTARTS_MIN}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        mean, ln_b = end_loss(df)
        if learned(mean, ln_b):
            return []
        for target in targets(df, "optimizer", "lr_schedule_peak"):
            if self._holds(df, target):
                lr = finite(series(df, "optimizer", target, "lr"))
                peak = float(finite(series(df, "optimizer", target, "lr_schedule_peak")).max())
                values = sorted({float(v) for v in lr})
                pace = _pace(lr)
                ev = {"group": target, "lr_schedule_peak": peak, "lr_max_seen": float(lr.max()),
                      "lr_values_seen": values[:8], "share_of_peak": rnd(float(lr.max()) / peak, 4),
                      "lr_changed_share": rnd(pace, 4), "steps": span(lr), "loss_end": rnd(mean),
                      "chance_ln_B": rnd(ln_b)}
                return [Finding(
                    "lr_below_schedule_peak", "error", ctx.name,
                    f"param group {target}'s schedule peaks at lr {peak:g} (max_lr), but the lr stayed at most "
                    f"{float(lr.max()):.3g} ({ev['share_of_peak']:.0%} of it) over steps {ev['steps'][0]}-"
                    f"{ev['steps'][1]} and changed between {pace:.0%} of consecutive observations (a schedule stepped "
                    "per batch changes it at every step): the schedule is not stepped per batch (once per epoch?), "
                    "so the run trains near its starting lr.", ev,
                    "Call scheduler.step() after every optimizer.step() for OneCycleLR / CyclicLR (they count "
                    "batches: total_steps = epochs x steps_per_epoch).", target),
                    Finding(
                    "lr_in_effect_below_peak", "warning", ctx.name,
                    f"the weights step at lr {float(lr.max()):.3g} at most, {ev['share_of_peak']:.0%} of the "
                    f"{peak:g} the schedule plans for this run, while the loss is not learned ({mean:.4f} vs ln(B) = "
                    f"{ln_b:.4f}): the lr in effect is too low for them to move.", ev,
                    "Step the schedule per batch (lr_below_schedule_peak); a higher lr tests the same reading.",
                    target)]
        resumed = finite(series(df, "optimizer", "optimizer", "state_steps_at_start"))
        resumed_at = int(resumed.max()) if len(resumed) and float(resumed.max()) > 0 else 0
        # resumed: far below the lr the restored state carried (not its initial_lr: an lr restored low from a schedule
        # that ended, held as it came, is lr_restored_low's)
        restarted = self._below_start(df, resumed=True) if resumed_at else {}
        if restarted:
            g0 = next(iter(restarted))
            ev = {"groups": restarted, "threshold_share_of_start": SCHEDULE_PEAK_SHARE, "loss_end": rnd(mean),
                  "chance_ln_B": rnd(ln_b), "state_steps_at_start": resumed_at}
            return [self._restarted(ctx, g0, restarted[g0], ev, mean, ln_b)]
        slow = self._schedule_slow(df, ctx, mean, ln_b)
        below = self._below_start(df)
        if not below:
            return slow
        g0 = next(iter(below))
        ev = {"groups": below, "threshold_share_of_start": SCHEDULE_PEAK_SHARE, "loss_end": rnd(mean),
              "chance_ln_B": rnd(ln_b)}
        return slow + [Finding(
            "lr_below_start", "error", ctx.name,
            f"every param group's lr stayed at most {SCHEDULE_PEAK_SHARE:g} of the lr it had when the watch opened, "
            f"over the whole run ({g0}: at most {below[g0]['lr_max_seen']:.3g} against {below[g0]['lr_start']:.3g}, "
            f"steps {below[g0]['steps'][0]}-{below[g0]['steps'][1]}) while the loss is not learned ({mean:.4f} vs "
            f"ln(B) = {ln_b:.4f}): whatever sets the lr each step (a scheduler, or a line in the loop) never brought "
            "it near the value the optimizer was built with: a warm-up longer than the run, a progress divided by "
            "the total twice, a factor applied twice.", ev,
            "Print the lr each step next to the one you meant (optimizer.param_groups[0]['lr']); check the "
            "schedule's arguments (step vs fraction of training, warm-up length, total steps).", g0),
            *(self._warmup_restarts(df, ctx, g0, below[g0]) or self._warmup_unfinished(df, ctx, g0, below[g0])
              or self._held_at_floor(df, ctx, g0, below[g0]))]

    @staticmethod
    def _schedule_slow(df: pd.DataFrame, ctx: RunContext, mean: float, ln_b: float) -> list[Finding]:
        """A torch scheduler attached to the optimizer that changes every group's lr only every few steps
        (`_stepped_slowly`), each lr at most SCHEDULE_SLOW_PEAK_SHARE of the one its group was built with."""
        attached = series(df, "optimizer", "optimizer", "scheduler_attached")
        if attached.empty or float(attached.max()) < 1:
            return []
        groups = {}
        for g, lr, ref in _group_lrs(df):
            if len(lr) < PERSIST_MIN_OBS or ref <= 0 or float(lr.iloc[1:].max()) > SCHEDULE_SLOW_PEAK_SHARE * ref \
                    or not _stepped_slowly(lr):
                return []
            changed = [int(lr.index[i]) for i in range(1, len(lr)) if lr.iloc[i] != lr.iloc[i - 1]]
            groups[g] = {"lr_built": ref, "lr_max_seen": float(lr.iloc[1:].max()), "changed_at_steps": changed[:8],
                         "share_of_built": rnd(float(lr.iloc[1:].max()) / ref, 4), "steps": span(lr)}
        if not groups:
            return []
        g0, info = next(iter(groups.items()))
        at = info["changed_at_steps"]
        return [Finding(
            "lr_schedule_slow", "error", ctx.name,
            f"the scheduler attached to the optimizer changed the lr only at step(s) {', '.join(map(str, at))} of "
            f"{info['steps'][0]}-{info['steps'][1]} (no two changes, nor the first and the start, within "
            f"{round(1 / SCHEDULE_PACE_SHARE)} steps), and {g0}'s lr stayed at most {info['lr_max_seen']:.3g}, "
            f"{info['share_of_built']:.0%} of the {info['lr_built']:.3g} it was built with, while the loss is not "
            f"learned ({mean:.4f} vs ln(B) = {ln_b:.4f}): a schedule written in optimizer steps (a warm-up of N "
            "steps, a total of N steps) stepped once per epoch, so the run stays in its first steps of warm-up.",
            {"groups": groups, "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b)},
            "Call scheduler.step() after every optimizer.step() (Lightning: return the scheduler with "
            "'interval': 'step'), or write the schedule in epochs.", g0)]

    @staticmethod
    def _warmup_restarts(df: pd.DataFrame, ctx: RunContext, group: str, info: dict) -> list[Finding]:
        """The schedule's side of lr_below_start as a saw-tooth: the lr rises and falls back at once to where it
        started, RESTARTS_MIN times or more, never near the built lr. A warm-up that starts over (fed the step
        within the epoch where it needs the run's step) does this; a cyclic or cosine schedule comes down over
        several steps, or jumps up, not down to its floor."""
        lr = finite(series(df, "optimizer", group, "lr")).iloc[1:]
        v = lr.to_numpy()
        floor = float(v.min())
        if len(v) < PERSIST_MIN_OBS or floor <= 0:
            return []
        drops = [i for i in range(1, len(v)) if v[i] < v[i - 1]]
        resets = [i for i in drops if v[i] <= floor * (1 + RESET_REL)]
        if len(resets) < RESTARTS_MIN or len(resets) != len(drops):
            return []
        at = [int(lr.index[i]) for i in resets]
        period = max(b - a for a, b in zip([int(lr.index[0]), *at], at))
        ev = {"group": group, "restarts_at": at[:12], "restarts": len(at), "longest_cycle_steps": period,
              "lr_floor": floor, "lr_max_seen": float(v.max()), "lr_start": info["lr_start"], "steps": info["steps"]}
        return [Finding(
            "lr_warmup_restarts", "error", ctx.name,
            f"the lr rises from {floor:.3g} and falls straight back to it {len(at)} times (at steps "
            f"{', '.join(map(str, at[:6]))}{', ...' if len(at) > 6 else ''}; cycles of up to {period} steps), never "
            f"above {float(v.max()):.3g}, {float(v.max()) / info['lr_start']:.1%} of the {info['lr_start']:.3g} the "
            "optimizer was built with: a warm-up that starts over (it is fed the step within the epoch, or a counter "
            "reset each epoch, where it needs the run's step), so the run never gets past its first steps of "
            "warm-up.", ev,
            "Feed the schedule the global step (epoch x steps per epoch + step), or step a torch scheduler once per "
            "optimizer step without re-creating it each epoch.", group)]

    @staticmethod
    def _restarted(ctx: RunContext, group: str, info: dict, ev: dict, mean: float, ln_b: float) -> Finding:
        return Finding(
            "lr_schedule_restarted", "error", ctx.name,
            f"the optimizer came in resumed (its state holds {ev['state_steps_at_start']} steps, and its param groups "
            f"the lr it was stepping at, {group}: {info['lr_start']:.3g}; load_state_dict restores both), but from "
            f"the first observed step the lr in effect stayed at most {info['lr_max_seen']:.3g} "
            f"({info['share_of_start']:.0%} of it, steps {info['steps'][0]}-{info['steps'][1]}) while the loss is "
            f"not learned ({mean:.4f} vs ln(B) = {ln_b:.4f}): what sets the lr each step started over from its "
            "beginning (a schedule or an lr object rebuilt at launch, its position not in the checkpoint), so the "
            "resumed run trains at the schedule's first-stage lr instead of the one it had reached.", ev,
            "Save and restore the schedule with the model and optimizer (scheduler.state_dict()), or compute the lr "
            "from the absolute step the run resumed at.", group)

    @staticmethod
    def _warmup_unfinished(df: pd.DataFrame, ctx: RunContext, group: str, info: dict) -> list[Finding]:
        """The schedule's side of lr_below_start where the lr still rises over the run's last readings: a warm-up
        the run never finishes (a schedule that fell to zero is `lr_schedule_gone`'s; an lr that rose and then held
        low is a factor, not a length); or where an attached scheduler moves it at only a few steps: stepped per
        epoch, not per optimizer step."""
        lr = finite(series(df, "optimizer", group, "lr")).iloc[1:]
        end = window(lr)
        values = int(lr.nunique())
        moved = (lr.diff().iloc[1:] != 0).to_numpy()
        changes = int(moved.sum())
        at = [i + 1 for i in range(len(moved)) if moved[i]]  # positions in `lr` where it changed
        attached = series(df, "optimizer", "optimizer", "scheduler_attached")
        # a torch scheduler on this optimizer that held the lr for PERSIST_MIN_OBS observations and then moved it
        # again: it is stepped less often than the optimizer (once per epoch), so a schedule counted in optimizer
        # steps advances one step per epoch (a warm-up that moves it every step and then ends holds after, not
        # before, its moves)
        sparse = (len(attached) and float(attached.iloc[-1]) == 1.0 and int(lr.iloc[-PERSIST_MIN_OBS:].nunique()) == 1
                  and any(b - a >= PERSIST_MIN_OBS for a, b in zip([0, *at], at)))
        rising = float(end.iloc[-1]) > float(end.iloc[0])
        if not (rising or sparse):
            return []
        ev = {"group": group, "lr_values_seen": values, "lr_changes": changes, "lr_first_used": float(lr.iloc[0]),
              "lr_end": float(lr.iloc[-1]), "lr_start": info["lr_start"], "steps": info["steps"]}
        seen = (f"the lr took {values} different values over steps {info['steps'][0]}-{info['steps'][1]} "
                + ("and still rises at the end" if rising else
                   f"and changed at only {changes} of {len(lr)} observed steps, with a scheduler attached")
                + f" ({float(lr.iloc[0]):.3g} -> {float(lr.iloc[-1]):.3g}), all under {SCHEDULE_PEAK_SHARE:g} of the "
                f"{info['lr_start']:.3g} the optimizer was built with: ")
        why = ("a warm-up the run never finishes (longer than the run, or fed a progress fraction where it expects "
               "the step)." if rising else "the scheduler is stepped less often than the optimizer (once per "
               "epoch?), so a schedule counted in optimizer steps, its warm-up first, advances one step per epoch.")
        return [Finding(
            "lr_schedule_holds_low", "warning", ctx.name, seen + why, ev,
            "Compare the schedule's value at a few steps with what it should be (scheduler.get_last_lr(), or the "
            "function the loop calls); check its warm-up length and arguments, and that scheduler.step() follows "
            "every optimizer.step() for a schedule sized in steps.", group)]

    @staticmethod
    def _held_at_floor(df: pd.DataFrame, ctx: RunContext, group: str, info: dict) -> list[Finding]:
        """The schedule's side of lr_below_start where the lr moved and then held still, far below the built lr, over
        at least half of the run's readings (and PERSIST_MIN_OBS): what sets it each step reached a value it keeps, a
        schedule at its end value (a decay whose progress is clamped from the start: a step offset in another unit,
        a total too small) or a schedule whose own lr arguments are lower than the optimizer's."""
        every = finite(series(df, "optimizer", group, "lr"))
        lr = every.iloc[1:]
        v = lr.to_numpy()
        if len(v) < PERSIST_MIN_OBS or float(v.max()) == float(v.min()):
            return []
        initial = finite(series(df, "optimizer", group, "lr_initial"))
        if float(v[-1]) <= LR_GONE * max(float(every.max()), float(initial.max()) if len(initial) else 0.0):
            return []  # held at a share of its own peak that lr_schedule_gone reads: the schedule side is named there
        held = int(len(v) - 1 - max(i for i in range(1, len(v)) if v[i] != v[i - 1]) + 1)
        if held < max(PERSIST_MIN_OBS, len(v) // 2):
            return []
        since = int(lr.index[len(v) - held])
        ev = {"group": group, "reading": "held_at_floor", "lr_held": float(v[-1]), "held_since_step": since,
              "observations_held": held, "lr_first_used": float(v[0]), "lr_start": info["lr_start"],
              "steps": info["steps"]}
        return [Finding(
            "lr_schedule_holds_low", "warning", ctx.name,
            f"the lr moved ({float(v[0]):.3g} at the first step used) and from step {since} held at {float(v[-1]):.3g} "
            f"for the rest of the run ({held} observations), {float(v[-1]) / info['lr_start']:.1%} of the "
            f"{info['lr_start']:.3g} the optimizer was built with: whatever sets the lr each step reached a value it "
            "keeps: a schedule already at its end value (a decay whose progress is clamped from the first step: a "
            "step offset counted in another unit, a total too small), or a schedule whose own lr arguments are lower "
            "than the optimizer's.", ev,
            "Print the schedule's progress and lr at a few steps (the step it is fed, its total, its start and end "
            "values) next to the optimizer's lr; after a resume, check the unit of the step offset.", group)]

    @staticmethod
    def _holds(df: pd.DataFrame, target: str) -> bool:
        lr = finite(series(df, "optimizer", target, "lr"))
        peak = finite(series(df, "optimizer", target, "lr_schedule_peak"))
        if len(lr) < PERSIST_MIN_OBS or peak.empty or float(peak.max()) <= 0:
            return False
        last = lr.iloc[-PERSIST_MIN_OBS:]
        share = float(lr.max()) / float(peak.max())
        if share <= SCHEDULE_PEAK_SHARE and float(last.max()) == float(last.min()):
            return True
        return share <= SCHEDULE_SLOW_PEAK_SHARE and _stepped_slowly(lr)

    @staticmethod
    def _below_start(df: pd.DataFrame, resumed: bool = False) -> dict:
        """Per group with trainable tensors: the lr at every observation after the first at most SCHEDULE_PEAK_SHARE
        of the larger of the lr at the watch's start and the group's initial_lr, over PERSIST_MIN_OBS observations, and
        changing (an lr that never changed is what the run was set up with; lr_restored_low reads the one restored
        from a state), or, with `resumed` (an optimizer resumed from a state: its lr at the start is the one the
        run had reached, not a setting), held, against that lr alone. Empty unless every such group holds it."""
        out = {}
        for g, lr, ref in _group_lrs(df, resumed):
            # from the second observation: a loop that sets the lr after its first observe shows the built value
            # there, which no optimizer step used
            used = lr.iloc[1:]
            if (len(lr) < PERSIST_MIN_OBS or ref <= 0 or float(used.max()) > SCHEDULE_PEAK_SHARE * ref
                    or (float(lr.max()) == float(lr.min()) and not resumed)):
                return {}
            out[g] = {"lr_start": ref, "lr_max_seen": float(used.max()), "lr_end": float(lr.iloc[-1]),
                      "share_of_start": rnd(float(used.max()) / ref, 4), "steps": span(used)}
        return out

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        if finding.id == "lr_warmup_restarts":
            return True  # two falls back to the floor are a fact of the schedule, not a phase of training
        if finding.id in ("lr_below_start", "lr_schedule_restarted"):
            # early on a long warm-up (thousands of steps, open_clip's default) reads the same: the lr rising from
            # zero, far below its target, the loss near chance. Only the standard persistence can tell them apart
            # (rules.persistence: held while the weights moved by their own norm, the loss not falling)
            lr = series(df, "optimizer", finding.target, "lr")
            start = float(finding.evidence["groups"][finding.target]["lr_start"])
            low = (lr <= SCHEDULE_PEAK_SHARE * start) | (lr.index == lr.index[0])
            # a warm-up still rises: an lr that held still at that level over PERSIST_MIN_OBS observations, the loss
            # not falling over them, is not one, whether or not the weights it barely moves moved by their norm
            last = lr.iloc[-PERSIST_MIN_OBS:]
            flat = (len(lr) > PERSIST_MIN_OBS and bool(low.iloc[-PERSIST_MIN_OBS:].all())
                    and float(last.max()) == float(last.min()) and not loss_falling(df, int(last.index[0])))
            return flat or stuck(df, low)
        if finding.id == "lr_schedule_slow":  # the schedule's pace is read; the loss must not be falling under it
            since = int(finding.evidence["groups"][finding.target]["steps"][0])
            return not loss_falling(df, since)
        # a direct reading that a schedule stepped per batch never shows (its lr changes at every step), not a
        # phase of training: no wait for the loss to stop falling
        return self._holds(df, finding.target)


def _last(df: pd.DataFrame, target: str, metric: str) -> float:
    s = finite(series(df, "optimizer", target, metric))
    return float(s.iloc[-1]) if len(s) else float("nan")
