"""Rules on the optimizer read directly (rules.optimizer): a firing and a near-miss case each, and
their alarm gates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diagnose.core import rules as R
from diagnose.core.rules.optimizer import SCHEDULE_PEAK_SHARE

from .harness import LN_B, ctx, frame, ids, loss, one, rec
from .test_persistence import N, moving, noisy


def _outside(with_grad, norms):
    return frame(rec("optimizer", "outside", "with_grad", with_grad),
                 rec("optimizer", "outside", "numel_with_grad", [28 * w for w in with_grad]),
                 rec("optimizer", "txt.weight", "outside_optimizer_numel",
                     {s: 24 for s, w in enumerate(with_grad) if w}),
                 rec("gradient_flow", "txt.weight", "param_norm", norms))


def test_params_outside_optimizer_fires_with_names_and_alarms_once_persistent():
    df = frame(_outside([2] * N, [3.0] * N), loss("loss_clip", noisy([LN_B] * N)), moving())
    f = one(R.params_outside_optimizer(df, ctx()), "params_outside_optimizer")
    assert f.severity == "error" and f.evidence["parameters"] == ["txt.weight"] and f.target == "txt.weight"
    assert R.params_outside_optimizer.alarm(f, df) is True
    early = frame(_outside([2] * 3, [3.0] * 3), loss("loss_clip", noisy([LN_B] * 3, n=3)), moving(3))
    assert R.params_outside_optimizer.alarm(one(R.params_outside_optimizer(early, ctx()), "params_outside_optimizer"),
                                            early) is False


def test_params_outside_optimizer_no_alarm_while_the_rest_of_the_model_learns():
    import numpy as np

    # a backbone kept out of the optimizer on purpose reads the same: while the loss falls, no alarm
    falling_loss = list(np.linspace(1.05 * LN_B, 0.5 * LN_B, N))
    df = frame(_outside([2] * N, [3.0] * N), loss("loss_clip", falling_loss), moving())
    f = one(R.params_outside_optimizer(df, ctx()), "params_outside_optimizer")
    assert R.params_outside_optimizer.alarm(f, df) is False


def test_params_outside_optimizer_meant_to_train_alarms_while_the_rest_learns():
    """Two readings say the parameters were meant to train: they became trainable during the run (unfrozen after
    the optimizer was built), or the optimizer's own tensors are another instance's and get no gradient. Either
    alarms after PERSIST_MIN_OBS observations, although the loss still falls."""
    from diagnose.core.rules.persistence import PERSIST_MIN_OBS

    falling_loss = list(np.linspace(1.05 * LN_B, 0.5 * LN_B, N))
    unfrozen = [0] * 5 + [2] * (N - 5)
    df = frame(_outside(unfrozen, [3.0] * N), rec("optimizer", "outside", "trainable", unfrozen),
               loss("loss_clip", falling_loss), moving())
    f = one(R.params_outside_optimizer(df, ctx()), "params_outside_optimizer")
    assert f.evidence["trainable_from_step"] == 5 and "set trainable during the run" in f.message
    assert R.params_outside_optimizer.alarm(f, df) is True
    short = df[df.step < 5 + PERSIST_MIN_OBS - 1]
    assert R.params_outside_optimizer.alarm(one(R.params_outside_optimizer(short, ctx()), "params_outside_optimizer"),
                                            short) is False
    stale = frame(_outside([2] * N, [3.0] * N), rec("optimizer", "outside", "trainable", [2] * N),
                  rec("optimizer", "foreign", "tensors", [6] * N), rec("optimizer", "foreign", "with_grad", [0] * N),
                  loss("loss_clip", falling_loss), moving())
    g = one(R.params_outside_optimizer(stale, ctx()), "params_outside_optimizer")
    assert g.evidence["stale_tensors"] == 6 and "built on another instance" in g.message
    assert R.params_outside_optimizer.alarm(g, stale) is True
    # near misses: trainable from the first observation (kept out on purpose) with a grad missing at a first
    # observe called before backward; foreign tensors that get gradients (a loss module's temperature)
    late_grad = [0] + [2] * (N - 1)
    kept = frame(_outside(late_grad, [3.0] * N), rec("optimizer", "outside", "trainable", [2] * N),
                 rec("optimizer", "foreign", "tensors", [1] * N), rec("optimizer", "foreign", "with_grad", [1] * N),
                 loss("loss_clip", falling_loss), moving())
    h = one(R.params_outside_optimizer(kept, ctx()), "params_outside_optimizer")
    assert "trainable_from_step" not in h.evidence and "stale_tensors" not in h.evidence
    assert R.params_outside_optimizer.alarm(h, kept) is False

def test_an_optimizer_holding_only_single_values_alarms_once_persistent():
    """An optimizer built before the layers existed holds only the logit scale: no weight can change. A direct
    reading: alarms after PERSIST_MIN_OBS observations, although the loss still falls (the scale alone moves it);
    near miss: the same outside tensors beside a group that holds a weight matrix (a tower locked on purpose)."""
    from diagnose.core.rules.persistence import PERSIST_MIN_OBS

    falling_loss = list(np.linspace(1.05 * LN_B, 0.9 * LN_B, N))

    def run(numel, n=N):
        return frame(_outside([2] * n, [3.0] * n), rec("optimizer", "group0", "params", [1] * n),
                     rec("optimizer", "group0", "numel", [numel] * n), loss("loss_clip", falling_loss[:n]), moving(n))

    df = run(1)
    f = one(R.params_outside_optimizer(df, ctx()), "params_outside_optimizer")
    assert f.evidence["only_scalars_inside"] == 1 and "no weight of any layer can change" in f.message
    assert R.params_outside_optimizer.alarm(f, df) is True
    short = run(1, PERSIST_MIN_OBS - 1)
    assert R.params_outside_optimizer.alarm(one(R.params_outside_optimizer(short, ctx()), "params_outside_optimizer"),
                                            short) is False
    locked = run(24 * 32)
    g = one(R.params_outside_optimizer(locked, ctx()), "params_outside_optimizer")
    assert "only_scalars_inside" not in g.evidence and R.params_outside_optimizer.alarm(g, locked) is False


def test_params_outside_optimizer_near_miss_a_second_optimizer_moves_them():
    df = frame(_outside([2] * N, list(np.linspace(3.0, 3.3, N))), loss("loss_clip", noisy([LN_B] * N)), moving())
    assert R.params_outside_optimizer(df, ctx()) == []
    assert R.params_outside_optimizer(frame(_outside([0] * N, [3.0] * N), moving()), ctx()) == []


def _lr(values, initial=1e-3):
    return frame(rec("optimizer", "group0", "lr", values),
                 rec("optimizer", "group0", "lr_initial", [initial] * len(values)),
                 rec("optimizer", "group0", "params", [4] * len(values)))


def test_lr_schedule_gone_fires_after_the_lr_reached_zero_and_the_loss_stalled():
    lr = [1e-3 * max(0.0, 1 - s / 8) for s in range(N)]  # a schedule sized for 8 steps in a 40-step run
    df = frame(_lr(lr), loss("loss_clip", noisy([0.9 * LN_B] * N)), moving())
    f = one(R.learning_rate_gone(df, ctx()), "lr_schedule_gone")
    assert f.evidence["groups"]["group0"]["gone_from_step"] == 8
    assert R.learning_rate_gone.alarm(f, df) is True


def _attached(flag, n=N):
    return rec("optimizer", "optimizer", "scheduler_attached", [float(flag)] * n)


def test_lr_restored_low_when_no_schedule_acts_in_this_run():
    # the optimizer's state loaded from a run whose schedule ended at 1e-6; no scheduler built in this run
    df = frame(_lr([1e-6] * N), _attached(0), loss("loss_clip", noisy([1.2 * LN_B] * N)), moving(per_step=1e-4))
    f = one(R.learning_rate_gone(df, ctx()), "lr_restored_low")
    assert f.evidence["scheduler_attached"] is False and R.learning_rate_gone.alarm(f, df) is True
    assert R.causes.BY_ID[R.declarations()["lr_restored_low"].cause].id == "learning_rate_too_low"
    # near misses: a scheduler is attached (a resumed schedule past its end); the lr changed during this run (a
    # schedule that took it away here); no record of schedulers (older records): the schedule finding, as before
    for df_ in (frame(_lr([1e-6] * N), _attached(1), loss("loss_clip", noisy([1.2 * LN_B] * N)), moving()),
                frame(_lr([1e-3 * max(0.0, 1 - s / 8) for s in range(N)]), _attached(0),
                      loss("loss_clip", noisy([0.9 * LN_B] * N)), moving()),
                frame(_lr([1e-6] * N), loss("loss_clip", noisy([1.2 * LN_B] * N)), moving())):
        assert R.learning_rate_gone(df_, ctx())[0].id == "lr_schedule_gone"


def test_lr_schedule_near_misses_warm_up_and_a_schedule_that_ended_after_learning():
    warm = [1e-3 * min(1.0, s / 1000) for s in range(N)]  # a long warm-up from 0: rising, not gone
    assert R.learning_rate_gone(frame(_lr(warm), loss("loss_clip", [LN_B] * N), moving()), ctx()) == []
    cosine = [1e-3 * 0.5 * (1 + np.cos(np.pi * s / (N - 1))) for s in range(N)]
    learned = frame(_lr(cosine), loss("loss_clip", [0.2 * LN_B] * N), moving())
    assert R.learning_rate_gone(learned, ctx()) == []
    kept = [1e-3 * 0.5 ** (s / 20) for s in range(N)]  # decays, but keeps 25% of its peak
    assert R.learning_rate_gone(frame(_lr(kept), loss("loss_clip", [LN_B] * N), moving()), ctx()) == []


def _rounded(same, loss_values, share: float = 1.0):
    n = len(loss_values)
    return frame(rec("gradient_flow.model", "model", "low_precision_unchanged_frac", same),
                 rec("gradient_flow.model", "model", "low_precision_share", [share] * len(same)),
                 loss("loss_clip", loss_values), moving(n, 1e-3))


def test_updates_rounded_away_error_while_the_loss_stays_and_warning_once_it_falls():
    stays = noisy([LN_B * 1.01] * N)
    df = _rounded([0.78, 0.8, 0.8, 0.81] + [0.84] * (N - 4), stays)
    f = one(R.updates_rounded_away(df, ctx(optimizer={"lr": 1e-4})), "updates_rounded_away")
    assert f.severity == "error" and f.evidence["unchanged_share_early"] == 0.8 and f.evidence["lr"] == 1e-4
    falls = noisy(np.linspace(LN_B, 0.3 * LN_B, N))
    assert one(R.updates_rounded_away(_rounded([0.8] * N, falls), ctx()), "updates_rounded_away").severity == "warning"


def test_updates_rounded_away_near_misses():
    stays = noisy([LN_B * 1.01] * N)
    # early steps move most elements; the share rises late as Adam's steps shrink (a run at a workable lr)
    assert R.updates_rounded_away(_rounded([0.22, 0.31, 0.33, 0.35, 0.35] + [0.8] * (N - 5), stays), ctx()) == []
    # a bfloat16 head on a float32 model: not the weights that carry the run
    assert R.updates_rounded_away(_rounded([0.9] * N, stays, share=0.1), ctx()) == []
    assert R.updates_rounded_away(_rounded([0.9] * 4, stays), ctx()) == []  # too few readings


def _decay(wd: float, decoupled: float, grad: float, loss_values):
    """One decayed group of two weights (norm 3 each) whose gradient norms are `grad` each."""
    df = frame(rec("optimizer", "group0", "weight_decay", wd), rec("optimizer", "group0", "decoupled", decoupled),
               rec("optimizer", "group0", "index", 0.0),
               rec("optimizer", "a.weight", "optimizer_group", {0: 0.0}),
               rec("optimizer", "b.weight", "optimizer_group", {0: 0.0}), loss("loss_clip", loss_values), moving())
    for name in ("a.weight", "b.weight", "a.bias"):
        df = frame(df, rec("gradient_flow", name, "param_norm", 3.0), rec("gradient_flow", name, "grad_norm", grad))
    return df


def test_decay_dominates_gradient_reads_the_l2_term_against_the_gradient():
    stays = noisy([LN_B * 1.01] * N)
    f = one(R.decay_dominates_gradient(_decay(30.0, 0.0, 1.0, stays), ctx()), "decay_dominates_gradient")
    assert f.severity == "error" and f.target == "group0"
    assert f.evidence["decay_to_gradient_early"] == pytest.approx(90.0) and f.evidence["parameters"] == 2
    falls = noisy(np.linspace(LN_B, 0.3 * LN_B, N))
    assert one(R.decay_dominates_gradient(_decay(30.0, 0.0, 1.0, falls), ctx()),
               "decay_dominates_gradient").severity == "warning"


def test_decay_dominates_gradient_near_misses():
    stays = noisy([LN_B * 1.01] * N)
    assert R.decay_dominates_gradient(_decay(3.0, 0.0, 1.0, stays), ctx()) == []  # 9x: under the bar
    assert R.decay_dominates_gradient(_decay(30.0, 1.0, 1.0, stays), ctx()) == []  # AdamW: decay on the weights
    assert R.decay_dominates_gradient(_decay(0.0, 0.0, 1.0, stays), ctx()) == []


def _temperature_in_group(values, decayed: bool = True, lr: float = 1e-2, wd: float = 1.0):
    """logit_scale in group0 (decoupled decay `wd` at `lr`), its magnitude per step `values`."""
    df = frame(rec("optimizer", "group0", "weight_decay", wd), rec("optimizer", "group0", "index", 0.0),
               rec("optimizer", "group0", "decoupled", 1.0), rec("optimizer", "group0", "lr", lr),
               rec("gradient_flow", "logit_scale", "param_norm", values))
    if decayed:
        df = frame(df, rec("optimizer", "logit_scale", "optimizer_group", {0: 0.0}),
                   rec("optimizer", "proj.weight", "optimizer_group", {0: 0.0}))
    return df


def _eps(eps: float, rms, loss_values):
    """One Adam group: its eps and the RMS of sqrt(v) read on every step."""
    rms = rms if isinstance(rms, list) else [rms] * len(loss_values)
    return frame(rec("optimizer", "group0", "eps", [eps] * len(rms)), rec("optimizer", "group0", "adaptive_rms", rms),
                 rec("optimizer", "group0", "lr", [1e-3] * len(rms)), loss("loss_clip", loss_values),
                 moving(len(loss_values), 1e-3))


def test_eps_dominates_step_reads_eps_against_the_gradient_scale():
    stays = noisy([LN_B * 1.01] * N)
    f = one(R.eps_dominates_step(_eps(1.0, 0.02, stays), ctx()), "eps_dominates_step")
    assert f.severity == "error" and f.target == "group0" and f.evidence["eps"] == 1.0
    assert f.evidence["step_share"] == pytest.approx(0.02 / 1.02, rel=1e-3) and "50x" in f.message
    falls = noisy(np.linspace(LN_B, 0.3 * LN_B, N))
    assert one(R.eps_dominates_step(_eps(1.0, 0.02, falls), ctx()), "eps_dominates_step").severity == "warning"


def test_eps_dominates_step_near_misses():
    stays = noisy([LN_B * 1.01] * N)
    assert R.eps_dominates_step(_eps(1e-8, 0.02, stays), ctx()) == []  # Adam's default eps
    assert R.eps_dominates_step(_eps(0.1, 0.02, stays), ctx()) == []  # 5x: under the bar
    assert R.eps_dominates_step(_eps(1.0, 0.0, stays), ctx()) == []  # no gradient at all: another rule's case
    # the gradients grew past eps / 10 at the end: the condition does not hold now
    assert R.eps_dominates_step(_eps(1.0, [0.02] * (N - 3) + [0.2] * 3, stays), ctx()) == []
    assert R.eps_dominates_step(_eps(1.0, 0.02, stays[:5]), ctx()) == []  # fewer readings than persistence needs


def test_temperature_decayed_names_the_parameter_its_group_and_the_fall():
    # AdamW, wd 1.0: the decay takes 2.66 lr per step from a value of 2.66, more than an Adam step (~lr)
    f = one(R.temperature_decayed(_temperature_in_group(list(np.linspace(2.659, 1.8, N))), ctx()),
            "temperature_decayed")
    assert f.target == "logit_scale" and f.severity == "warning"
    assert f.evidence["weight_decay"] == 1.0 and f.evidence["other_decayed_parameters"] == 1
    assert f.evidence["value_end"] == pytest.approx(1.8, abs=0.05)
    assert f.evidence["decay_to_step"] == pytest.approx(2.659)


def test_temperature_decayed_near_misses():
    falling = list(np.linspace(2.659, 1.8, N))
    rising = list(np.linspace(2.659, 3.0, N))  # decayed, but the gradient wins: it grows
    assert R.temperature_decayed(_temperature_in_group(rising), ctx()) == []
    drift = list(np.linspace(2.659, 2.5, N))  # within what training moves it
    assert R.temperature_decayed(_temperature_in_group(drift), ctx()) == []
    # not in a decayed group: something else drives it
    assert R.temperature_decayed(_temperature_in_group(falling, decayed=False), ctx()) == []
    # driven down by the gradient steps: decay 0.1 x 2.66 per lr, under an Adam step (an lr too high)
    assert R.temperature_decayed(_temperature_in_group(falling, lr=1e-3, wd=0.1), ctx()) == []


def _decay_rate(rate, n=N, norms=None):
    parts = [rec("optimizer", "group0", "decay_per_step", [rate] * n), rec("optimizer", "group0", "params", [4] * n),
             rec("optimizer", "group0", "lr", [0.2] * n), rec("optimizer", "group0", "weight_decay", [0.1] * n),
             rec("optimizer", "group0", "decoupled", [0.0] * n)]
    if norms is not None:
        parts.append(rec("gradient_flow.model", "model", "param_norm", norms))
    return frame(*parts)


def test_decay_shrinks_weights_reads_the_rate_the_settings_fix():
    # SGD momentum 0.9, lr 0.2, wd 0.1 (an AdamW recipe's decay kept): 0.2 of the weights per step
    df = frame(_decay_rate(0.2, norms=list(np.linspace(8.5, 5.1, N))), loss("loss_clip", noisy([LN_B] * N)), moving())
    f = one(R.decay_shrinks_weights(df, ctx()), "decay_shrinks_weights")
    assert f.severity == "error" and f.evidence["e_fold_steps"] == 5.0 and f.target == "group0"
    assert R.decay_shrinks_weights.alarm(f, df) is True
    # once the run learned: a warning
    learned_run = frame(_decay_rate(0.2), loss("loss_clip", [0.1 * LN_B] * N), moving())
    assert one(R.decay_shrinks_weights(learned_run, ctx()), "decay_shrinks_weights").severity == "warning"


def test_decay_shrinks_weights_near_misses():
    # the recipes that train: AdamW 1e-3 x 0.1, SGD 0.1 x 5e-4 / 0.1; an Adam L2 term (NaN: not a fixed rate)
    for rate in (1e-4, 5e-4, float("nan")):
        assert R.decay_shrinks_weights(frame(_decay_rate(rate), loss("loss_clip", [LN_B] * N), moving()), ctx()) == []
    # too few observations
    assert R.decay_shrinks_weights(frame(_decay_rate(0.2, n=4), loss("loss_clip", [LN_B] * 4), moving(4)), ctx()) == []


def _cycle(lr, peak=1e-3):
    return frame(rec("optimizer", "group0", "lr", lr), rec("optimizer", "group0", "lr_schedule_peak", [peak] * len(lr)))


def test_lr_below_schedule_peak_when_the_schedule_is_not_stepped_per_batch():
    # OneCycleLR stepped once per epoch: max_lr / 25 for a whole epoch, then one notch
    lr = [4.0e-5] * 12 + [4.3e-5] * 8
    df = frame(_cycle(lr), loss("loss_clip", noisy([0.8 * LN_B] * N)))
    found = R.lr_below_schedule_peak(df, ctx())
    f, low = one(found, "lr_below_schedule_peak"), one(found, "lr_in_effect_below_peak")
    assert f.evidence["share_of_peak"] == 0.043 and R.lr_below_schedule_peak.alarm(f, df) is True
    assert low.severity == "warning" and low.evidence == f.evidence
    # the schedule's stepping is the mechanism; the lr too low is what it does, ranked after it
    ranked = R.rank_root_causes([f.to_dict(), low.to_dict()], {"learned": False})
    assert [c["cause"] for c in ranked] == ["lr_schedule", "learning_rate_too_low"]


def test_lr_below_schedule_peak_when_the_schedule_moves_once_per_epoch_over_the_whole_run():
    """OneCycleLR stepped per epoch over epochs of 4 steps: the lr changes at a quarter of the steps, climbs above a
    tenth of max_lr by the end and changes within the last observations: the schedule's pace says it."""
    lr = [1e-3 * (0.04 + 0.016 * (s // 4)) for s in range(N)]
    df = frame(_cycle(lr, peak=1e-3), loss("loss_clip", noisy([0.95 * LN_B] * N)))
    f = one(R.lr_below_schedule_peak(df, ctx()), "lr_below_schedule_peak")
    changes = (N - 1) // 4  # one per epoch of 4 steps
    assert f.evidence["share_of_peak"] == round(lr[-1] / 1e-3, 4) <= 0.25
    assert f.evidence["lr_changed_share"] == round(changes / (N - 1), 4)
    assert f"changed between {changes / (N - 1):.0%} of consecutive observations" in f.message
    # at the same pace, a schedule that by the end gives more than a quarter of its peak: not held low
    fast = [1e-3 * (0.04 + 0.06 * (s // 4)) for s in range(N)]
    assert "lr_below_schedule_peak" not in ids(R.lr_below_schedule_peak(
        frame(_cycle(fast, peak=1e-3), loss("loss_clip", noisy([0.95 * LN_B] * N))), ctx()))


def test_lr_schedule_slow_where_an_attached_scheduler_written_in_steps_is_stepped_per_epoch():
    """A warm-up of 10 optimizer steps from 0 stepped once per epoch of 16 steps: lr 0, then 1/9 of the built lr,
    then 2/9 (above a tenth: lr_below_start stays quiet): the schedule's pace names it."""
    lr = [1e-3 / 9 * (s // 16) for s in range(N)]
    attached = rec("optimizer", "optimizer", "scheduler_attached", [1.0] * N)
    df = frame(_by_hand(lr), attached, loss("loss_clip", noisy([LN_B] * N)), moving())
    found = R.lr_below_schedule_peak(df, ctx())
    f = one(found, "lr_schedule_slow")
    assert f.evidence["groups"]["group0"]["changed_at_steps"] == list(range(16, N, 16))
    assert "stepped once per epoch" in f.message and "'interval': 'step'" in f.next_step
    assert R.lr_below_schedule_peak.alarm(f, df) is True
    assert [c["cause"] for c in R.rank_root_causes([x.to_dict() for x in found], {"learned": False})][0] == \
        "lr_schedule"
    # near misses: a warm-up stepped per step that then holds; set by hand (no scheduler); a run that learned; an lr
    # that reaches more than a quarter of the built one at that pace
    warm = [1e-3] + [1e-5 * min(1.0, s / 6) for s in range(1, N)]
    for values, extra, lossy in ((warm, [attached], noisy([LN_B] * N)), (lr, [], noisy([LN_B] * N)),
                                 (lr, [attached], [0.2 * LN_B] * N),
                                 ([1e-3 / 3 * (s // 16) for s in range(N)], [attached], noisy([LN_B] * N))):
        df = frame(_by_hand(values), *extra, loss("loss_clip", lossy), moving())
        assert "lr_schedule_slow" not in ids(R.lr_below_schedule_peak(df, ctx()))


def test_lr_below_schedule_peak_near_misses():
    # stepped per batch: the warm-up changes the lr at every step (even while still under a tenth of the peak)
    warm = [4e-5 * (1 + 0.003 * t) for t in range(N)]
    assert R.lr_below_schedule_peak(frame(_cycle(warm), loss("loss_clip", [LN_B] * N)), ctx()) == []
    # the lr reached the peak earlier (the cycle's end anneals far below it)
    annealed = [1e-3] * 5 + [1e-8] * 15
    assert R.lr_below_schedule_peak(frame(_cycle(annealed), loss("loss_clip", [LN_B] * N)), ctx()) == []
    # a run that learned anyway
    assert R.lr_below_schedule_peak(frame(_cycle([4e-5] * N), loss("loss_clip", [0.1 * LN_B] * N)), ctx()) == []


def _by_hand(values, start=1e-3):
    return frame(rec("optimizer", "group0", "lr", values),
                 rec("optimizer", "group0", "lr_start", [start] * len(values)),
                 rec("optimizer", "group0", "lr_initial", [values[0]] * len(values)),
                 rec("optimizer", "group0", "params", [4] * len(values)))


def test_lr_below_start_when_the_loop_never_brings_the_lr_near_the_built_one():
    """A warm-up whose progress is divided by the total twice: the lr set by hand creeps up from 0 to under a tenth
    of the lr the optimizer was built with over the whole run; the first observation may still show the built
    value (set after observe)."""
    creep = [1e-3] + [1e-3 * 0.09 * s / N for s in range(1, N)]
    df = frame(_by_hand(creep), loss("loss_clip", noisy([LN_B] * N)), moving(per_step=1e-4))
    f = one(R.lr_below_schedule_peak(df, ctx()), "lr_below_start")
    g = f.evidence["groups"]["group0"]
    assert g["lr_start"] == pytest.approx(1e-3) and g["share_of_start"] < SCHEDULE_PEAK_SHARE
    assert R.causes.BY_ID[R.declarations()["lr_below_start"].cause].id == "learning_rate_too_low"
    # the schedule's side of the same reading: the lr set each step, a second cause to check
    side = one(R.lr_below_schedule_peak(df, ctx()), "lr_schedule_holds_low")
    assert side.severity == "warning" and side.evidence["lr_values_seen"] == N - 1
    ranked = [c["cause"] for c in R.rank_root_causes([x.to_dict() for x in R.lr_below_schedule_peak(df, ctx())])]
    assert ranked == ["learning_rate_too_low", "lr_schedule"]
    # a long warm-up reads the same early: no alarm until the standard persistence (weights moved by their norm)
    assert R.lr_below_schedule_peak.alarm(f, df) is False
    moved = frame(_by_hand(creep), loss("loss_clip", noisy([LN_B] * N)), moving(per_step=0.2))
    assert R.lr_below_schedule_peak.alarm(one(R.lr_below_schedule_peak(moved, ctx()), "lr_below_start"), moved)
    # near misses: the lr reaches SCHEDULE_PEAK_SHARE of the start; an lr that never changed (set so); a run
    # that learned
    reach = [1e-3 * (SCHEDULE_PEAK_SHARE + 0.01) * s / (N - 1) for s in range(N)]
    for df_ in (frame(_by_hand(reach), loss("loss_clip", noisy([LN_B] * N)), moving()),
                frame(_by_hand([1e-5] * N), loss("loss_clip", noisy([LN_B] * N)), moving()),
                frame(_by_hand(creep), loss("loss_clip", [0.3 * LN_B] * N), moving())):
        assert "lr_below_start" not in [x.id for x in R.lr_below_schedule_peak(df_, ctx())]
    # a warm-up that ended and then held low (a factor applied twice): no schedule-side warning
    held = [1e-3] + [1e-6 * min(1.0, s / 5) for s in range(1, N)]
    found = [x.id for x in R.lr_below_schedule_peak(frame(_by_hand(held), loss("loss_clip", noisy([LN_B] * N)),
                                                          moving()), ctx())]
    assert found == ["lr_below_start"]


def test_lr_schedule_restarted_where_a_resumed_optimizer_steps_far_below_the_lr_it_came_in_with():
    """A step schedule rebuilt at relaunch: the optimizer's state holds 15 steps and the lr it had reached (1e-3),
    the loop sets the first stage's 1e-4 at every step. Held (never changing) counts here: the start is no setting."""
    held = [1e-4] * N
    resumed = rec("optimizer", "optimizer", "state_steps_at_start", {0: 15.0})
    df = frame(_by_hand(held), resumed, loss("loss_clip", noisy([LN_B] * N)), moving(per_step=0.2))
    f = one(R.lr_below_schedule_peak(df, ctx()), "lr_schedule_restarted")
    assert f.severity == "error" and f.evidence["state_steps_at_start"] == 15
    assert f.evidence["groups"]["group0"]["lr_start"] == pytest.approx(1e-3)
    ranked = R.rank_root_causes([f.to_dict()], {"learned": False})
    assert [c["cause"] for c in ranked] == ["lr_schedule"]
    assert R.lr_below_schedule_peak.alarm(f, df)
    # near misses: a fresh optimizer set so (no state); resumed at an lr within SCHEDULE_PEAK_SHARE; resumed and
    # learned
    fresh = rec("optimizer", "optimizer", "state_steps_at_start", {0: 0.0})
    for df_ in (frame(_by_hand(held), fresh, loss("loss_clip", noisy([LN_B] * N)), moving()),
                frame(_by_hand([2e-4] * N), resumed, loss("loss_clip", noisy([LN_B] * N)), moving()),
                frame(_by_hand(held), resumed, loss("loss_clip", [0.3 * LN_B] * N), moving())):
        assert R.lr_below_schedule_peak(df_, ctx()) == []
    # an lr restored low (a schedule that ended before the resume) and held as it came: its initial_lr is high, but
    # the lr did not fall from the one the state carried (lr_restored_low's reading, not a restart)
    stale = frame(rec("optimizer", "group0", "lr", held), rec("optimizer", "group0", "lr_start", held),
                  rec("optimizer", "group0", "lr_initial", [1e-3] * N), rec("optimizer", "group0", "params", [4] * N),
                  resumed, loss("loss_clip", noisy([LN_B] * N)), moving())
    assert "lr_schedule_restarted" not in ids(R.lr_below_schedule_peak(stale, ctx()))


def test_lr_warmup_restarts_where_the_warm_up_is_fed_the_step_within_the_epoch():
    """MiniGPT-4's warm-up on the in-epoch step: 1e-6 rising by 1.75e-7 per step, back to 1e-6 every 8 steps, never
    above 3.6e-5 of the built 1e-3: a saw-tooth. The schedule is the mechanism; the lr too low what it does."""
    saw = [1e-3] + [1e-6 + 1.75e-7 * 200 * (s % 8) / 40 for s in range(1, N)]
    df = frame(_by_hand(saw), loss("loss_clip", noisy([LN_B] * N)), moving())
    found = R.lr_below_schedule_peak(df, ctx())
    f = one(found, "lr_warmup_restarts")
    assert f.severity == "error" and f.evidence["restarts_at"] == list(range(8, N, 8))
    assert f.evidence["longest_cycle_steps"] == 8
    assert "lr_schedule_holds_low" not in ids(found) and R.lr_below_schedule_peak.alarm(f, df)
    ranked = [c["cause"] for c in R.rank_root_causes([x.to_dict() for x in found], {"learned": False})]
    assert ranked == ["lr_schedule", "learning_rate_too_low"]
    # near misses: one fall (a phase ends); a fall that comes down over several steps (a cycle, not a restart)
    once = [1e-3] + [1e-6 * (1 + (s if s < N // 2 else s - N // 2)) for s in range(1, N)]
    tri = [1e-3] + [1e-6 * (1 + min(s % 8, 8 - s % 8)) for s in range(1, N)]
    for values in (once, tri):
        got = ids(R.lr_below_schedule_peak(frame(_by_hand(values), loss("loss_clip", noisy([LN_B] * N)), moving()),
                                           ctx()))
        assert "lr_warmup_restarts" not in got and "lr_below_start" in got


def test_lr_schedule_holds_low_where_an_attached_scheduler_moves_the_lr_once_per_epoch():
    """A warm-up sized in optimizer steps, stepped once per epoch: lr 0 for the first epoch, 1/12 of the built lr for
    the second. With a scheduler attached the schedule's side is named beside lr_below_start as a scheduler stepped
    per epoch; set by hand (no scheduler), as an lr held at a floor."""
    epochs = [1e-3] + [0.0] * (N // 2 - 1) + [1e-3 / 12] * (N - N // 2)
    attached = rec("optimizer", "optimizer", "scheduler_attached", [1.0] * N)
    df = frame(_by_hand(epochs), attached, loss("loss_clip", noisy([LN_B] * N)), moving())
    side = one(R.lr_below_schedule_peak(df, ctx()), "lr_schedule_holds_low")
    assert side.evidence["lr_changes"] == 1 and "stepped less often than the optimizer" in side.message
    # set by hand (no scheduler): the lr moved once and held at 1/12 of the built one for half the run, which the
    # schedule-side warning reads as an lr held at a value whatever sets it keeps (a schedule at its end value)
    found = R.lr_below_schedule_peak(frame(_by_hand(epochs), loss("loss_clip", noisy([LN_B] * N)), moving()), ctx())
    assert ids(found) == ["lr_below_start", "lr_schedule_holds_low"]
    assert found[1].evidence["reading"] == "held_at_floor" and found[1].evidence["held_since_step"] == N // 2
    # stepped with the optimizer: values that change every few steps, or a short warm-up stepped every step that
    # then holds (a factor applied twice, LambdaLR returning the lr): the holds come after the moves, not before
    steps = [1e-3] + [1e-5 * (1 + abs((s // 2) % 4 - 2)) for s in range(1, N)]  # up and down by steps (no reset)
    warm = [1e-3] + [1e-6 * min(1.0, s / 6) for s in range(1, N)]
    for values in (steps, warm):
        found = [x.id for x in R.lr_below_schedule_peak(frame(_by_hand(values), attached,
                                                              loss("loss_clip", noisy([LN_B] * N)), moving()), ctx())]
        assert found == ["lr_below_start"]


def test_an_lr_held_at_a_schedules_end_value_names_the_schedule_and_alarms_once_it_stays_flat():
    """A resumed decay whose progress is clamped at its end from the first step (a step offset counted in samples):
    after a 10-step warm-up the lr holds at lr_final, 1% of the built lr. The error stays lr_below_start; the warning
    beside it names the schedule; the alarm does not wait for weights the lr barely moves to move by their norm."""
    ramp = [1e-5 * (0.2 + 0.8 * min(1.0, s / 10)) for s in range(N)]  # set before the first observe
    df = frame(_by_hand(ramp), loss("loss_clip", noisy([LN_B] * N)), moving(per_step=1e-5))
    found = R.lr_below_schedule_peak(df, ctx())
    f, side = one(found, "lr_below_start"), one(found, "lr_schedule_holds_low")
    assert side.evidence["lr_held"] == pytest.approx(1e-5) and side.evidence["held_since_step"] == 10
    assert [c["cause"] for c in R.rank_root_causes([x.to_dict() for x in found], {"learned": False})] == \
        ["learning_rate_too_low", "lr_schedule"]
    assert R.lr_below_schedule_peak.alarm(f, df)
    # near misses for the alarm: the lr still rising at the end (a long warm-up on its way), and a falling loss
    creep = [1e-3] + [1e-3 * 0.09 * s / N for s in range(1, N)]
    rising = frame(_by_hand(creep), loss("loss_clip", noisy([LN_B] * N)), moving(per_step=1e-5))
    assert not R.lr_below_schedule_peak.alarm(one(R.lr_below_schedule_peak(rising, ctx()), "lr_below_start"), rising)
    falling = frame(_by_hand(ramp), loss("loss_clip", [LN_B * (1 - 0.012 * s) for s in range(N)]),
                    moving(per_step=1e-5))
    assert not R.lr_below_schedule_peak.alarm(one(R.lr_below_schedule_peak(falling, ctx()), "lr_below_start"), falling)


def _stepped(update, lr=1e-3, grad=10.0, low=None, n=N):
    update = update if isinstance(update, list) else [update] * n
    parts = [rec("gradient_flow.model", "model", "update_to_param", update),
             rec("gradient_flow.model", "model", "grad_norm", [grad] * n),
             rec("gradient_flow.model", "model", "param_norm", [30.0] * n),
             rec("gradient_flow.model", "model", "numel", [1e4] * n),
             rec("optimizer", "outside", "with_grad", [0] * n), rec("optimizer", "group0", "lr", [lr] * n),
             rec("optimizer", "group0", "params", [4] * n), loss("loss_clip", noisy([LN_B] * n))]
    if low is not None:
        parts.append(rec("gradient_flow.model", "model", "low_precision_share", [low] * n))
    return frame(*parts)


def test_an_optimizer_whose_steps_change_no_parameter_of_the_model_alarms():
    """A wrapper optimizer whose base optimizer was replaced by a stale copy on resume: every parameter is in a
    group, the gradients are there, the lr is positive, and no weight ever changes."""
    from diagnose.core.rules.persistence import PERSIST_MIN_OBS

    df = _stepped(0.0)
    f = one(R.params_outside_optimizer(df, ctx()), "optimizer_steps_nothing")
    assert f.severity == "error" and f.evidence["measured_steps"] == N and f.evidence["lr"] == {"group0": 1e-3}
    assert R.params_outside_optimizer.alarm(f, df) is True
    assert R.causes.BY_ID[R.declarations()["optimizer_steps_nothing"].cause].id == "param_not_in_optimizer"
    # near misses: one step that moved something; an lr of 0 (a warm-up's first step); too few measurements; an lr
    # whose steps round away in float32 (too low an lr); float16/bfloat16 weights (updates_rounded_away's case)
    for df_ in (_stepped([0.0] * (N - 1) + [1e-4]), _stepped(0.0, lr=0.0), _stepped(0.0, n=PERSIST_MIN_OBS - 1),
                _stepped(0.0, lr=1e-12, grad=1e-3), _stepped(0.0, low=1.0)):
        assert R.params_outside_optimizer(df_, ctx()) == []


def test_an_optimizer_whose_step_never_runs_is_named_apart_from_one_that_steps_other_tensors():
    """`if scheduler: scheduler.step() else: optimizer.step()`: the step post-hook counts no call at all, so nothing
    applied an update (not a step that moved other tensors); with calls counted, the earlier finding stands."""
    never = pd.concat([_stepped(0.0), rec("optimizer", "optimizer", "steps_called", [0] * N)])
    f = one(R.params_outside_optimizer(never, ctx()), "optimizer_never_stepped")
    assert f.severity == "error" and f.evidence["steps_called"] == 0 and "optimizer.step() never ran" in f.message
    assert R.params_outside_optimizer.alarm(f, never) is True
    assert R.declarations()["optimizer_never_stepped"].cause == "learning_rate_too_low"
    called = pd.concat([_stepped(0.0), rec("optimizer", "optimizer", "steps_called", list(range(N)))])
    assert one(R.params_outside_optimizer(called, ctx()), "optimizer_steps_nothing")
    # the weights moved: neither (a hook that missed a wrapper's steps says nothing by itself)
    moved = pd.concat([_stepped(1e-4), rec("optimizer", "optimizer", "steps_called", [0] * N)])
    assert R.params_outside_optimizer(moved, ctx()) == []
