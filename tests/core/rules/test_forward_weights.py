"""Rule forward_weights_stale: a firing and near-miss cases."""

from __future__ import annotations

from diagnose.core import rules as R
from diagnose.core.rules.forward_weights import STALE_MIN_OBS

from .harness import LN_B, N, ctx, frame, ids, loss, one, rec


def _stale(values, at_step=1.0, layers=("resampler.to_q", "proj")):
    steps = {10 * i: v for i, v in enumerate(values)}
    parts = [rec("forward_weights", name, "stale_output", {s: v * (1.0 - 0.1 * k) for s, v in steps.items()})
             for k, name in enumerate(layers)]
    return frame(*parts, rec("forward_weights", "model", "autocast_at_step", [at_step] * N))


def test_a_forward_left_behind_by_the_updates_is_an_error_naming_autocast_when_a_region_was_open():
    df = frame(_stale([0.0, 0.12, 0.26, 0.35, 0.45]), loss("loss_clip", [LN_B] * N))
    f = one(R.forward_weights_stale(df, ctx()), "forward_weights_stale")
    assert f.severity == "error" and f.evidence["stale_output_end"] == 0.45 and f.evidence["first_step_above"] == 10
    assert f.evidence["layers"] == {"resampler.to_q": 0.45, "proj": 0.405}
    assert "autocast" in f.message and "clear_autocast_cache" in f.next_step
    assert R.forward_weights_stale.alarm(f, df) is True
    # without a region open at the steps: a copy kept across steps, in other words
    g = one(R.forward_weights_stale(frame(_stale([0.0, 0.12, 0.26, 0.35], at_step=0.0),
                                          loss("loss_clip", [LN_B] * N)), ctx()), "forward_weights_stale")
    assert "autocast" not in g.next_step and "copy" in g.message
    # a run that learned anyway: a warning
    learned = frame(_stale([0.0, 0.12, 0.26, 0.35]), loss("loss_clip", [0.2 * LN_B] * N))
    assert one(R.forward_weights_stale(learned, ctx()), "forward_weights_stale").severity == "warning"


def test_near_misses_rounding_one_odd_reading_too_few_readings_and_a_shrinking_distance():
    lossy = loss("loss_clip", [LN_B] * N)
    for values in ([1e-4] * 6,  # another kernel's rounding
                   [0.0, 0.0, 0.3, 0.0, 0.0],  # one odd forward
                   [0.0] + [0.3] * (STALE_MIN_OBS - 1),  # fewer readings above than STALE_MIN_OBS
                   [0.0, 0.4, 0.3, 0.2]):  # above, but shrinking back: not a copy left behind
        df = frame(_stale(values), lossy)
        assert "forward_weights_stale" not in ids(R.forward_weights_stale(df, ctx())), values
