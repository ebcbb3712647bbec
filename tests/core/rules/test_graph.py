"""Rules on the loss's autograd graph (rules.graph): trainable leaves in no registered module and no param
group. Firing, near misses and the alarm gate."""

from __future__ import annotations

import numpy as np

from diagnose.core import rules as R
from diagnose.core.rules.graph import RECREATED_MIN, UNMOVED_REL, UNSTEPPED_MAJORITY

from .harness import LN_B, ctx, frame, loss, one, rec
from .test_persistence import N, moving, noisy

PROBE = "graph_leaves"


def _leaves(count=4, numel=64, in_groups=1, norms=None, n=N):
    """A walk at step 0 (count, shapes) and the leaves' joint norm on every step after it."""
    parts = [rec(PROBE, "unregistered", "count", {0: count}), rec(PROBE, "unregistered", "numel", {0: numel}),
             rec(PROBE, "in_groups", "numel", {0: in_groups})]
    if count:
        parts += [rec(PROBE, "leaf0:4x8", "unregistered_numel", {0: 32}), rec(PROBE, "leaf1:4", "unregistered_numel",
                                                                              {0: 4})]
        parts.append(rec(PROBE, "unregistered", "norm", [3.0] * n if norms is None else norms))
    return frame(*parts)


def _at_chance(n=N):
    return loss("loss_clip", noisy([LN_B] * n, n=n))


def test_fires_with_shapes_and_is_an_error_while_not_learned():
    df = frame(_leaves(), _at_chance(), moving(per_step=1e-4))
    f = one(R.params_unregistered(df, ctx()), "params_unregistered")
    assert f.severity == "error" and f.target == "unregistered"
    assert f.evidence["count"] == 4 and f.evidence["numel"] == 64 and f.evidence["shapes"] == ["4x8", "4"]
    assert f.evidence["relative_norm_change"] == 0 and abs(f.evidence["share_of_path_values"] - 64 / 65) < 1e-4
    assert "plain list/dict" in f.message and "nn.ModuleList" in f.next_step
    assert R.declarations()["params_unregistered"].cause == "param_not_in_optimizer"


def test_warning_once_learned():
    df = frame(_leaves(), loss("loss_clip", [0.3 * LN_B] * N), moving())
    assert one(R.params_unregistered(df, ctx()), "params_unregistered").severity == "warning"


def test_near_miss_a_second_optimizer_moves_them():
    moved = list(np.linspace(3.0, 3.0 * (1 + 10 * UNMOVED_REL), N))
    assert R.params_unregistered(frame(_leaves(norms=moved), _at_chance()), ctx()) == []
    # the norm moving by float rounding only still fires
    still = list(np.linspace(3.0, 3.0 * (1 + 0.5 * UNMOVED_REL), N))
    assert one(R.params_unregistered(frame(_leaves(norms=still), _at_chance()), ctx()), "params_unregistered")


def test_near_miss_none_found_or_registered_later():
    assert R.params_unregistered(frame(_leaves(count=0), _at_chance()), ctx()) == []
    # the walk after add_param_group found none any more
    fixed = frame(_leaves(), rec(PROBE, "unregistered", "count", {5: 0}), _at_chance())
    assert R.params_unregistered(fixed, ctx()) == []


def test_alarm_counts_observations_when_most_path_values_are_unstepped():
    # the optimizer holds only a logit scale: the model barely moves, the gate counts observations
    df = frame(_leaves(), _at_chance(), moving(per_step=1e-4))
    f = one(R.params_unregistered(df, ctx()), "params_unregistered")
    assert R.params_unregistered.alarm(f, df) is True
    early = frame(_leaves(n=4), _at_chance(4), moving(4, per_step=1e-4))
    assert R.params_unregistered.alarm(one(R.params_unregistered(early, ctx()), "params_unregistered"), early) is False


def test_alarm_waits_for_the_model_when_the_unstepped_part_is_a_minority():
    minority = _leaves(numel=64, in_groups=int(64 / UNSTEPPED_MAJORITY))  # share 1/3
    still = frame(minority, _at_chance(), moving(per_step=1e-4))
    f = one(R.params_unregistered(still, ctx()), "params_unregistered")
    assert R.params_unregistered.alarm(f, still) is False  # the trained part has not had its chance yet
    moved = frame(minority, _at_chance(), moving())
    assert R.params_unregistered.alarm(f, moved) is True


def test_no_alarm_while_the_loss_falls():
    # a part kept out of training on purpose reads the same: a run that learns never alarms
    df = frame(_leaves(), loss("loss_clip", list(np.linspace(1.05 * LN_B, 0.5 * LN_B, N))), moving(per_step=1e-4))
    f = one(R.params_unregistered(df, ctx()), "params_unregistered")
    assert R.params_unregistered.alarm(f, df) is False


def _fresh(walks: int, n=N):
    """Walks at steps 1..walks that found fresh leaves after the earlier ones were freed; each generation's norm."""
    norms = {s: 3.0 + 0.1 * s for s in range(walks + 1)}
    return frame(rec(PROBE, "unregistered", "count", {s: 4 for s in range(walks + 1)}),
                 rec(PROBE, "unregistered", "numel", {s: 64 for s in range(walks + 1)}),
                 rec(PROBE, "in_groups", "numel", {0: 640}), rec(PROBE, "unregistered", "norm", norms),
                 rec(PROBE, "unregistered", "recreated", {s: 1.0 for s in range(1, walks + 1)}))


def test_leaves_made_anew_at_every_forward_fire_although_their_norm_changes_and_alarm_without_waiting_for_moves():
    """A layer built inside forward: each walk finds other tensors (their norms differ: not a second optimizer); a
    tenth of the path's values, yet the alarm needs no movement of the model, only PERSIST_MIN_OBS steps of a loss
    that does not fall."""
    df = frame(_fresh(RECREATED_MIN), _at_chance())
    f = one(R.params_unregistered(df, ctx()), "params_unregistered")
    assert f.severity == "error" and f.evidence["recreated_walks"] == RECREATED_MIN and "made anew" in f.message
    assert f.evidence["relative_norm_change"] is None
    assert R.params_unregistered.alarm(f, df) is True
    # near misses: one fresh generation only (a part rebuilt once) waits for the usual gate, which a model that does
    # not move never passes; fresh leaves but a loss that falls
    once = frame(_fresh(1), _at_chance())
    g = one(R.params_unregistered(once, ctx()), "params_unregistered")
    assert R.params_unregistered.alarm(g, once) is False
    falling = frame(_fresh(RECREATED_MIN), loss("loss_clip", list(np.linspace(LN_B, 0.4 * LN_B, N))))
    h = one(R.params_unregistered(falling, ctx()), "params_unregistered")
    assert R.params_unregistered.alarm(h, falling) is False
