"""Rule params_written_outside: a hand-written decay, a copy that undoes the steps, and near misses."""

from __future__ import annotations

from diagnose.core import rules as R
from diagnose.core.rules.outside_writes import OUTSIDE_MIN_OBS, OUTSIDE_REL

from .harness import LN_B, N, ctx, frame, ids, loss, one, rec

M = "gradient_flow.model"


def _writes(ratio: dict[int, float], shrink: float, names=("proj.weight", "proj.bias")):
    """outside_to_update at every step (0 where the dict has none), outside_shrink, and the named writes."""
    full = {s: ratio.get(s, 0.0) for s in range(N)}
    parts = [rec(M, "model", "outside_to_update", full),
             rec(M, "model", "outside_shrink", {s: (shrink if v else 0.0) for s, v in full.items()})]
    parts += [rec("gradient_flow", n, "outside_to_param", {s: 0.5 / (k + 1) for s in ratio}) for k, n in
              enumerate(names)]
    return frame(*parts)


def _sawtooth(at: list[int], low: float = 0.8 * LN_B) -> list[float]:
    """A loss that falls between the writes and jumps back to chance at each."""
    out, level = [], LN_B
    for s in range(N):
        level = LN_B if s in at else max(low, level - 0.05 * LN_B)
        out.append(level + (0.01 if s % 2 else -0.01))
    return out


def test_writes_that_send_the_loss_back_are_steps_undone_and_an_alarm():
    at = [5, 10, 15]
    df = frame(_writes({s: 11.0 for s in at}, shrink=0.16), loss("loss_clip", _sawtooth(at)))
    f = one(R.params_written_outside(df, ctx()), "steps_undone_outside")
    assert f.severity == "error" and f.evidence["writes"] == 3 and f.evidence["write_steps"] == at
    assert f.evidence["outside_to_update_median"] == 11.0 and f.evidence["loss_jump_at_writes"] > 0
    assert f.target == "proj.weight" and "restore" in f.next_step
    assert R.params_written_outside.alarm(f, df) is True
    # the same writes, the loss does not move at them: a warning that says so, no alarm
    flat = frame(_writes({s: 11.0 for s in at}, shrink=0.16), loss("loss_clip", [LN_B + (0.01 if s % 2 else -0.01)
                                                                                    for s in range(N)]))
    g = one(R.params_written_outside(flat, ctx()), "steps_undone_outside")
    assert g.severity == "warning" and "no jump" in g.message and not R.params_written_outside.alarm(g, flat)


def test_a_write_that_only_scales_the_tensors_down_is_a_decay():
    df = frame(_writes({s: 2.0 for s in range(1, N)}, shrink=1.0), loss("loss_clip", [LN_B] * N))
    f = one(R.params_written_outside(df, ctx()), "decay_written_outside")
    assert f.severity == "error" and f.evidence["outside_shrink_median"] == 1.0 and "decay" in f.message
    assert R.params_written_outside.alarm(f, df) is True
    # a run that learned under it: a warning; a loss that keeps falling: no alarm while it falls
    learned = frame(_writes({s: 2.0 for s in range(1, N)}, shrink=1.0), loss("loss_clip", [0.2 * LN_B] * N))
    assert one(R.params_written_outside(learned, ctx()), "decay_written_outside").severity == "warning"
    falling = frame(_writes({s: 2.0 for s in range(1, N)}, shrink=1.0),
                    loss("loss_clip", [LN_B * (1 - 0.02 * s) for s in range(N)]))
    assert not R.params_written_outside.alarm(one(R.params_written_outside(falling, ctx()), "decay_written_outside"),
                                               falling)


def test_near_misses_small_writes_a_single_write_and_none():
    lossy = loss("loss_clip", [LN_B] * N)
    for ratio in ({s: 0.03 for s in range(1, N)},  # a decay scaled by the lr, a clamp: a fraction of the step
                  {5 * (k + 1): 11.0 for k in range(OUTSIDE_MIN_OBS - 1)},  # one reload
                  {s: OUTSIDE_REL * 0.99 for s in range(1, N)},
                  {}):
        df = frame(_writes(ratio, shrink=1.0), lossy)
        assert not {"steps_undone_outside", "decay_written_outside"} & set(ids(R.params_written_outside(df, ctx()))), \
            ratio
