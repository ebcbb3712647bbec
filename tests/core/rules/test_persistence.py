"""Alarm gates (rules.persistence): a condition that is normal early in a run alarms only once it has
persisted while the weights moved by their own norm and the run stopped getting better. For each rule
with a gate: a trajectory that contracts and then recovers gets no alarm, a persistent one does."""

from __future__ import annotations

import numpy as np

from diagnose.core import rules as R
from diagnose.core.rules.persistence import falling, held_since

from .harness import LN_B, ctx, frame, loss, one, rec

N = 40
UPDATE = 0.2  # update/param per step: the weights move by their own norm every 5 steps


def moving(n: int = N, per_step: float = UPDATE):
    return rec("gradient_flow.model", "model", "update_to_param", [per_step] * n)


def noisy(level, seed: int = 0, sd: float = 0.01, **_):
    level = np.asarray(level, dtype=float)
    return list(level + np.random.default_rng(seed).normal(0, sd, len(level)))


def test_held_since_and_falling():
    import pandas as pd

    assert held_since(pd.Series([True, False, True, True], index=[0, 1, 2, 3])) == 2
    assert held_since(pd.Series([True, True, False], index=[0, 5, 10])) is None
    assert falling(pd.Series(np.linspace(4, 2, 30)))
    assert not falling(pd.Series(noisy([3.0] * 30)))


def _alarms(rule, df, fid):
    f = one(rule(df, ctx()), fid)
    return rule.alarm(f, df)


def test_loss_at_chance_recovering_run_does_not_alarm_a_stuck_one_does():
    # at chance for the first steps, then falling: the run leaves the state -> no alarm while at chance
    early = frame(loss("loss_clip", noisy([LN_B] * 12, n=12)), moving(12))
    assert _alarms(R.loss_at_chance, early, "loss_at_chance") is False
    stuck = frame(loss("loss_clip", noisy([LN_B] * N)), moving())
    assert _alarms(R.loss_at_chance, stuck, "loss_at_chance") is True
    # at chance but falling steadily toward below the band: still getting better, no alarm
    sliding = frame(loss("loss_clip", list(np.linspace(1.02 * LN_B, 0.98 * LN_B, N))), moving())
    findings = R.loss_at_chance(sliding, ctx())
    assert all(not R.loss_at_chance.alarm(f, sliding) for f in findings)


def _collapse(cos, rank, n=N):
    return frame(rec("collapse", "text", "cosine_mean", cos), rec("collapse", "text", "effective_rank", rank))


def test_embedding_collapse_that_contracts_then_recovers_does_not_alarm():
    # cosine 0.94 -> 0.99 over ten steps, rank 10.5 -> 5.6 while the loss falls (the healthy loop)
    n = 12
    cos = list(np.linspace(0.94, 0.99, n))
    rank = list(np.linspace(10.5, 5.6, n))
    df = frame(_collapse(cos, rank, n), loss("loss_clip", list(np.linspace(LN_B, 0.6 * LN_B, n))), moving(n))
    assert _alarms(R.embedding_collapse, df, "embedding_collapse") is False


def test_embedding_collapse_that_persists_without_improvement_alarms():
    df = frame(_collapse([0.99] * N, noisy([1.5] * N, sd=0.05)), loss("loss_clip", noisy([LN_B] * N)), moving())
    assert _alarms(R.embedding_collapse, df, "embedding_collapse") is True
    # the same collapse with the weights barely moving: not yet persisted
    still = frame(_collapse([0.99] * N, [1.5] * N), loss("loss_clip", noisy([LN_B] * N)), moving(per_step=1e-3))
    assert _alarms(R.embedding_collapse, still, "embedding_collapse") is False


def test_embedding_rows_that_are_copies_from_the_start_alarm_without_the_weights_moving():
    # a tower that discards its input: rows identical to float rounding at every observation, loss at ln(B)
    copies = frame(_collapse([0.99999] * 8, [1.0] * 8), loss("loss_clip", noisy([LN_B] * 8, n=8)),
                   moving(8, per_step=1e-3))
    assert _alarms(R.embedding_collapse, copies, "embedding_collapse") is True
    # near misses: rows merely alike (0.99, the healthy contraction's range) with the weights barely moving;
    # copies now but spread at the first observation (a collapse: it waits for the weights); too few observations;
    # a loss that falls
    alike = frame(_collapse([0.99] * 8, [1.5] * 8), loss("loss_clip", noisy([LN_B] * 8, n=8)), moving(8, per_step=1e-3))
    assert _alarms(R.embedding_collapse, alike, "embedding_collapse") is False
    late = frame(_collapse([0.5] + [0.99999] * 7, [9.0] + [1.0] * 7), loss("loss_clip", noisy([LN_B] * 8, n=8)),
                 moving(8, per_step=1e-3))
    assert _alarms(R.embedding_collapse, late, "embedding_collapse") is False
    short = frame(_collapse([0.99999] * 5, [1.0] * 5), loss("loss_clip", noisy([LN_B] * 5, n=5)),
                  moving(5, per_step=1e-3))
    assert _alarms(R.embedding_collapse, short, "embedding_collapse") is False
    down = frame(_collapse([0.99999] * 8, [1.0] * 8), loss("loss_clip", list(np.linspace(LN_B, 0.7 * LN_B, 8))),
                 moving(8, per_step=1e-3))
    assert _alarms(R.embedding_collapse, down, "embedding_collapse") is False


def _spread(n: int = N):
    return frame(rec("collapse", "image", "effective_rank", [12.0] * n),
                 rec("collapse", "text", "effective_rank", [12.0] * n),
                 rec("gradient_flow.layer", "proj", "update_to_param", [0.05] * n))


def test_chance_not_collapsed_alarms_only_once_it_persisted_without_improvement():
    stuck_run = frame(_spread(), loss("loss_clip", noisy([LN_B] * N)), moving())
    assert _alarms(R.chance_not_collapsed, stuck_run, "chance_not_collapsed") is True
    # the first steps of a healthy run look the same: at chance, spread out, weights moving
    early = frame(_spread(5), loss("loss_clip", noisy([LN_B] * 5)), moving(5))
    assert _alarms(R.chance_not_collapsed, early, "chance_not_collapsed") is False


def test_a_collapse_whose_updates_vanished_alarms_once_it_covers_half_the_run():
    # big steps first (the weights move by their norm by step 5), then the gradients vanish in the collapse
    updates = [0.3] * 5 + [1e-4] * (N - 5)
    df = frame(_collapse([0.99] * N, [1.5] * N), loss("loss_clip", noisy([LN_B] * N)),
               rec("gradient_flow.model", "model", "update_to_param", updates))
    assert _alarms(R.embedding_collapse, df, "embedding_collapse") is True
    # the same vanished updates on a run that never moved its weights at all: not yet a state of the run
    still = frame(_collapse([0.99] * N, [1.5] * N), loss("loss_clip", noisy([LN_B] * N)), moving(per_step=1e-4))
    assert _alarms(R.embedding_collapse, still, "embedding_collapse") is False


def test_updates_shrinking_at_chance_are_no_persistence():
    # a healthy open_clip run: at chance for 25 steps with its updates falling to a ninth of the first step,
    # then it learned; a shrinking step is not evidence that the state will last
    decaying = list(0.01 * np.geomspace(1.0, 0.11, N))
    df = frame(_collapse([0.99] * N, [1.5] * N), loss("loss_clip", noisy([LN_B] * N)),
               rec("gradient_flow.model", "model", "update_to_param", decaying))
    assert _alarms(R.embedding_collapse, df, "embedding_collapse") is False


def test_a_loss_coming_down_to_chance_is_not_getting_better():
    # from 1.3 ln(B) down to ln(B) and stuck there: unlearning random init's confident wrong logits
    values = list(np.linspace(1.3 * LN_B, LN_B, N // 2)) + noisy([LN_B] * (N - N // 2))
    df = frame(_collapse([0.99] * N, [1.5] * N), loss("loss_clip", values), moving())
    assert _alarms(R.embedding_collapse, df, "embedding_collapse") is True
    # the same fall continued below chance is learning: no alarm
    below = frame(_collapse([0.99] * N, [1.5] * N), loss("loss_clip", list(np.linspace(1.3 * LN_B, 0.7 * LN_B, N))),
                  moving())
    assert _alarms(R.embedding_collapse, below, "embedding_collapse") is False
