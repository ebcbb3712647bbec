"""Loss-logging rules (`diagnose.core.rules.loss_logging`): a logged total that is not the weighted sum
of its components, identical components, a log scaled or aggregated from the logits' own loss, and a log whose
trend does not track the logits' own loss."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from diagnose.core import rules as R
from diagnose.core.rules.loss_logging import TRACK_SE
from diagnose.core.rules.persistence import falling

from .harness import LN_B, WIN, N, components, ctx, frame, loss, one, rec


def test_loss_logging_inconsistent_evidence():
    gap = {s: (0.25 if s == 7 else -0.1 if s == 9 else 0.0) for s in range(N)}
    df = frame(rec("loss_split", "total", "value", 5.0), rec("loss_split", "total", "total_minus_weighted_sum", gap),
               rec("loss_split", "loss_clip", "weight", 1.0), rec("loss_split", "loss_mrl", "weight", 0.5))
    f = one(R.logged_total(df, ctx()), "loss_logging_inconsistent")
    assert f.severity == "error"
    assert f.evidence == {"steps_inconsistent": 2, "steps_total": N, "max_abs_gap": 0.25, "at_step": 7,
                          "weights": {"loss_clip": 1.0, "loss_mrl": 0.5}}


def _unweighted(total, parts: dict) -> pd.DataFrame:
    return frame(rec("loss_split", "total", "value", total),
                 *(rec("loss_split", c, "value", v) for c, v in parts.items()))


def test_a_total_that_is_one_of_its_components_without_weights():
    # Matryoshka losses at 32 / 8 / 2 dims; the "total" is the last one a loop over them left in its variable
    mrl = {"loss_mrl_32": [LN_B * (1 - 0.04 * s) for s in range(N)], "loss_mrl_8": [2.5 - 0.02 * s for s in range(N)],
           "loss_mrl_2": [3.0 - 0.01 * s for s in range(N)]}
    f = one(R.logged_total(_unweighted(mrl["loss_mrl_2"], mrl), ctx()), "loss_logging_inconsistent")
    assert f.severity == "error" and f.evidence["equals_component"] == "loss_mrl_2"
    assert f.evidence["steps_compared"] == N and "loss.item()" in f.next_step
    # near misses: the mean, or the sum, of the components; a single component; the others 0 (the sum is the total);
    # equal to a component on only some steps
    mean = [sum(v[s] for v in mrl.values()) / 3 for s in range(N)]
    assert R.logged_total(_unweighted(mean, mrl), ctx()) == []
    assert R.logged_total(_unweighted([3 * m for m in mean], mrl), ctx()) == []
    assert R.logged_total(_unweighted(mrl["loss_mrl_2"], {"loss_mrl_2": mrl["loss_mrl_2"]}), ctx()) == []
    zeros = {"loss_clip": mrl["loss_mrl_2"], "loss_aux": [0.0] * N}
    assert R.logged_total(_unweighted(mrl["loss_mrl_2"], zeros), ctx()) == []
    partly = [v if s < N // 2 else mean[s] for s, v in enumerate(mrl["loss_mrl_2"])]
    assert R.logged_total(_unweighted(partly, mrl), ctx()) == []


def test_a_total_that_counts_its_components_twice_without_weights():
    # test33's densecap pattern: the total summed over a dict that already holds it, so it adds itself: 2 x the sum
    parts = {"loss_itc": [3.0 - 0.1 * s for s in range(N)], "loss_mrl": [3.2 - 0.12 * s for s in range(N)]}
    summed = [a + b for a, b in zip(*parts.values())]
    f = one(R.logged_total(_unweighted([2 * v for v in summed], parts), ctx()), "loss_logging_inconsistent")
    assert f.severity == "error" and f.evidence["total_over_sum"] == 2 and f.evidence["steps_compared"] == N
    # one component counted twice is the same mechanism
    one(R.logged_total(_unweighted([2 * v for v in parts["loss_itc"]], {"loss_itc": parts["loss_itc"]}), ctx()),
        "loss_logging_inconsistent")
    # near misses: the sum, the mean, a whole multiple on only some steps, a multiple that is not whole (a weighting)
    assert R.logged_total(_unweighted(summed, parts), ctx()) == []
    assert R.logged_total(_unweighted([v / 2 for v in summed], parts), ctx()) == []
    partly = [2 * v if s % 2 else v for s, v in enumerate(summed)]
    assert R.logged_total(_unweighted(partly, parts), ctx()) == []
    assert R.logged_total(_unweighted([1.5 * v for v in summed], parts), ctx()) == []


@pytest.mark.parametrize("value, severity", [(LN_B, "warning"), (2.0, "error")])
def test_components_identical_evidence(value, severity):
    f = one(R.identical_components(components(value, value), ctx()), "components_identical")
    assert f.severity == severity and f.target == "loss_clip~loss_mrl"
    ev = f.evidence
    assert ev["components"] == ["loss_clip", "loss_mrl"] and ev["share_identical"] == 1.0
    assert ev["mean_value"] == pytest.approx(value, abs=1e-4) and ev["chance_ln_B"] == pytest.approx(LN_B, abs=1e-4)
    assert ev["window_steps"] == [N - WIN, N - 1]
    assert ("at ln(B)" in f.message) == (severity == "warning")


def test_loss_logged_scaled_by_a_constant_factor_and_near_misses():
    import numpy as np

    own = list(np.linspace(4.5, 0.2, N))
    logits = rec("contrastive", "logits", "loss_diagonal", own)
    f = one(R.logged_scaled(frame(logits, rec("loss_split", "loss_clip", "value", [v / 4 for v in own])), ctx()),
            "loss_logged_scaled")
    assert f.severity == "error" and f.evidence["factor"] == pytest.approx(0.25)
    # near misses: the loss as computed; a factor within rounding of 1; another loss on the same logits
    # (label smoothing: not a constant ratio)
    assert R.logged_scaled(frame(logits, rec("loss_split", "loss_clip", "value", own)), ctx()) == []
    assert R.logged_scaled(frame(logits, rec("loss_split", "loss_clip", "value", [v * 1.005 for v in own])),
                           ctx()) == []
    smoothed = [0.9 * v + 0.1 * LN_B for v in own]
    assert R.logged_scaled(frame(logits, rec("loss_split", "loss_clip", "value", smoothed)), ctx()) == []


def test_loss_logged_in_two_scales_and_near_misses():
    """A loss scale left on the logged value on three micro-batches of four (unscaled only where the optimizer
    steps): equal to the logits' own loss on a quarter of the steps, 16384 x it on the rest."""
    import numpy as np

    n = 40
    own = list(np.linspace(4.5, 0.2, n))

    def reported(times):
        return frame(rec("contrastive", "logits", "loss_diagonal", own),
                     rec("loss_split", "loss_clip", "value", [v * times(s) for s, v in enumerate(own)]))

    f = one(R.logged_two_scales(reported(lambda s: 1.0 if s % 4 == 3 else 16384.0), ctx()), "loss_logged_two_scales")
    assert f.severity == "error" and f.evidence["factor_off_median"] == pytest.approx(16384.0)
    assert f.evidence["steps_equal"] == n // 4 and f.evidence["steps_off"] == n - n // 4
    # an accumulation divisor left on it (a quarter) the same way, and the other way round
    assert R.logged_two_scales(reported(lambda s: 1.0 if s % 4 == 3 else 0.25), ctx())
    # near misses: the loss as computed; a constant factor (loss_logged_scaled's); off by less than 2x on the
    # other steps (an extra term); equal on too few steps
    assert R.logged_two_scales(reported(lambda s: 1.0), ctx()) == []
    assert R.logged_two_scales(reported(lambda s: 4.0), ctx()) == []
    assert R.logged_two_scales(reported(lambda s: 1.0 if s % 4 == 3 else 1.9), ctx()) == []
    assert R.logged_two_scales(reported(lambda s: 1.0 if s < 3 else 16384.0), ctx()) == []


def _aggregate_frame(own, reported):
    return frame(rec("contrastive", "logits", "loss_diagonal", list(own)),
                 rec("loss_split", "loss_clip", "value", list(reported)))


def test_loss_logged_as_a_running_mean_a_moving_average_or_a_micro_batch_sum():
    import numpy as np

    rng = np.random.default_rng(0)
    own = np.linspace(LN_B, 0.5, N) * (1 + 0.05 * rng.standard_normal(N))  # a learning run, one batch's noise
    mean = np.cumsum(own) / np.arange(1, N + 1)
    f = one(R.logged_aggregate(_aggregate_frame(own, mean), ctx()), "loss_logged_running_mean")
    assert f.severity == "error" and f.evidence["relative_error"] < 1e-6
    ema = [own[0]]
    for v in own[1:]:
        ema.append(0.9 * ema[-1] + 0.1 * v)
    f = one(R.logged_aggregate(_aggregate_frame(own, ema), ctx()), "loss_logged_smoothed")
    assert f.severity == "warning" and f.evidence["alpha"] == pytest.approx(0.1)
    # four micro-batches summed, the last one's logits observed: each micro-batch its own noise
    micro = np.linspace(LN_B, 0.5, N)[:, None] * (1 + 0.05 * rng.standard_normal((N, 4)))
    f = one(R.logged_aggregate(_aggregate_frame(micro[:, -1], micro.sum(1)), ctx()), "loss_logged_summed")
    assert f.severity == "error" and f.evidence["k"] == 4



def test_loss_logged_divided_once_more_than_the_objective():
    import numpy as np

    # four micro-batches' losses, each divided by 4 for accumulation and summed (their mean), then divided by 4
    # again for the log; the last micro-batch's logits observed
    rng = np.random.default_rng(2)
    micro = np.linspace(1.3 * LN_B, 0.5, N)[:, None] * (1 + 0.05 * rng.standard_normal((N, 4)))
    f = one(R.logged_aggregate(_aggregate_frame(micro[:, -1], micro.mean(1) / 4), ctx()), "loss_logged_divided")
    assert f.severity == "error" and f.evidence["k"] == 4 and f.evidence["factor_median"] == pytest.approx(0.25, 0.05)
    # near misses: the mean logged once (the objective); a weight of 0.4 on the loss (no integer)
    ids_of = [x.id for x in R.logged_aggregate(_aggregate_frame(micro[:, -1], micro.mean(1)), ctx())]
    assert "loss_logged_divided" not in ids_of
    ids_of = [x.id for x in R.logged_aggregate(_aggregate_frame(micro[:, -1], 0.4 * micro.mean(1)), ctx())]
    assert "loss_logged_divided" not in ids_of


def test_loss_logged_summed_read_on_the_means_when_a_small_batch_scatters():
    """Sixteen micro-batches of a small batch: one micro-batch's loss scatters by up to 60% as the loss falls, so
    the per-step ratios spread far around 16 (their median drifts); the ratio of the two means still reads 16."""
    import numpy as np

    rng = np.random.default_rng(5)
    n = 50
    level = LN_B * np.exp(-np.arange(n) / 10.0) + 0.1
    noise = 0.05 + 0.55 * np.arange(n) / n  # relative scatter of one micro-batch's loss, growing as it falls
    micro = level[:, None] * np.exp(noise[:, None] * rng.standard_normal((n, 16)))
    frame_ = _aggregate_frame(micro[:, -1], micro.sum(1))
    ratio = micro.sum(1) / micro[:, -1]
    assert np.quantile(ratio, 0.75) - np.quantile(ratio, 0.25) > 0.2 * 16  # the per-step reading alone fails
    f = one(R.logged_aggregate(frame_, ctx()), "loss_logged_summed")
    assert f.evidence["k"] == 16
    # near miss: the same scatter around a factor at no integer (a loss with an extra term)
    off = micro[:, :1].repeat(16, 1).sum(1) / 16 * 2.5 * np.exp(0.3 * rng.standard_normal(n))
    assert "loss_logged_summed" not in [x.id for x in R.logged_aggregate(_aggregate_frame(micro[:, -1], off), ctx())]

def test_loss_logged_aggregate_near_misses():
    import numpy as np

    rng = np.random.default_rng(1)
    own = np.linspace(LN_B, 0.5, N) * (1 + 0.05 * rng.standard_normal(N))
    for reported in (own,  # the step's own loss
                     own * (1 + 1e-4 * rng.standard_normal(N)),  # rounded on the way
                     np.cumsum(own) / np.arange(1, N + 1) * (1 + 0.01 * rng.standard_normal(N)),  # not the mean
                     # the mean of four micro-batches (the objective) with one micro-batch's logits observed
                     np.linspace(LN_B, 0.5, N) * (1 + 0.025 * rng.standard_normal(N)),
                     own * 2.5 * (1 + 0.05 * rng.standard_normal(N)),  # a factor at no integer
                     own * 4):  # constant to rounding: loss_logged_scaled's, not a sum of noisy parts
        assert R.logged_aggregate(_aggregate_frame(own, reported), ctx()) == []
    assert R.logged_aggregate(_aggregate_frame(own[:5], np.cumsum(own[:5]) / np.arange(1, 6)), ctx()) == []  # 5 steps


def test_running_mean_kept_when_the_meter_breaks_after_its_first_steps():
    import numpy as np

    rng = np.random.default_rng(2)
    n = 40
    own = np.linspace(LN_B, 0.5, n) * (1 + 0.05 * rng.standard_normal(n))
    # a sum never reset while its count restarts every 10 steps (a lost `running_loss = 0`): the mean since step 0
    # on steps 0-9, then sum / (steps since the last log)
    broken = np.cumsum(own) / (np.arange(n) % 10 + 1)
    f = one(R.logged_aggregate(_aggregate_frame(own, broken), ctx()), "loss_logged_running_mean")
    assert f.severity == "error" and f.evidence["held_steps"] == [0, 9] and f.evidence["broke_at"] == 10
    assert "From step 10 on" in f.message
    # a meter reset each "epoch" of 10 steps: a running mean within each epoch, still not the step's loss, but
    # its lag is bounded by the epoch: a warning, as for a moving average
    epoch = np.concatenate([np.cumsum(own[i:i + 10]) / np.arange(1, 11) for i in range(0, n, 10)])
    f = one(R.logged_aggregate(_aggregate_frame(own, epoch), ctx()), "loss_logged_running_mean")
    assert f.severity == "warning" and f.evidence["restarts"] == [10, 20, 30] and f.evidence["window_max"] == 10
    # near miss: the log was fixed after step 9 (the step's own loss from then on): the early pattern is history
    fixed = np.concatenate([np.cumsum(own[:10]) / np.arange(1, 11), own[10:]])
    assert "loss_logged_running_mean" not in [f.id for f in R.logged_aggregate(_aggregate_frame(own, fixed), ctx())]


def test_running_mean_times_a_factor_per_epoch_is_an_error_and_a_plain_epoch_meter_not_two_scales():
    """A per-sample sum (loss x batch) divided by the number of batches, reset each epoch: 32 x an epoch's running
    mean, read from the first step's factor; the same meter divided by the samples is the plain (warning) meter, and
    its value equal to the step's at each restart is no loss logged in two scales."""
    import numpy as np

    rng = np.random.default_rng(3)
    n = 40
    own = np.linspace(LN_B, 0.2, n) * (1 + 0.05 * rng.standard_normal(n))
    epoch = np.concatenate([np.cumsum(own[i:i + 10]) / np.arange(1, 11) for i in range(0, n, 10)])
    f = one(R.logged_aggregate(_aggregate_frame(own, 32 * epoch), ctx()), "loss_logged_running_mean")
    assert f.severity == "error" and f.evidence["factor"] == pytest.approx(32)
    assert f.evidence["restarts"] == [10, 20, 30]
    assert "32 x the mean" in f.message
    f = one(R.logged_aggregate(_aggregate_frame(own, epoch), ctx()), "loss_logged_running_mean")
    assert f.severity == "warning" and f.evidence["factor"] == 1.0
    assert R.logged_two_scales(_aggregate_frame(own, epoch), ctx()) == []
    # near miss: a factor on the first step only (a warm-up scale) is no meter: the pattern does not hold after it
    first_off = epoch.copy()
    first_off[0] *= 32
    assert "loss_logged_running_mean" not in [x.id for x in R.logged_aggregate(_aggregate_frame(own, first_off),
                                                                               ctx())]


def _tracking_frame(own, reported, chance=LN_B):
    return frame(rec("contrastive", "logits", "loss_diagonal", list(own)), loss("loss_clip", list(reported), chance))


def _learning(n=60, seed=0, noise=0.05):
    import numpy as np

    rng = np.random.default_rng(seed)
    curve = LN_B * np.exp(-np.arange(n) / 12.0) + 0.15  # ln B down to ~0.15: learned
    return curve, curve * (1 + noise * rng.standard_normal(n))


def test_loss_logged_not_tracking_fires_when_the_log_rises_or_stays_while_the_logits_learn():
    import numpy as np

    _, own = _learning()
    n = len(own)
    no_reset = np.cumsum(own) / (np.arange(n) % 10 + 1)  # the sum never reset: the log grows with the steps
    f = one(R.logged_not_tracking(_tracking_frame(own, no_reset), ctx()), "loss_logged_not_tracking")
    ev = f.evidence
    assert f.severity == "error" and ev["steps"] == [0, n - 1] and ev["steps_compared"] == n
    assert ev["own_relative_change"] < -0.8 and ev["reported_relative_change"] > 0
    assert ev["disagreement_se"] > TRACK_SE and ev["own_end"] < 0.5 * LN_B
    # a stale value (the first step's loss logged every step, with a little rounding noise): it does not fall
    stale = own[0] * (1 + 1e-3 * np.random.default_rng(3).standard_normal(n))
    assert one(R.logged_not_tracking(_tracking_frame(own, stale), ctx()), "loss_logged_not_tracking")
    # rows scored against more candidates (features gathered from 4 ranks): the loss against the given targets
    gathered = frame(rec("contrastive", "logits", "loss_target", list(own)), rec("contrastive", "logits", "cols", 256),
                     loss("loss_clip", list(no_reset), chance=math.log(256)))
    assert one(R.logged_not_tracking(gathered, ctx()), "loss_logged_not_tracking").evidence["chance_ln_B"] == \
        pytest.approx(math.log(256), abs=1e-4)
    # and the ranking puts the logging above a cause whose severity read "not learned" from the misstated log
    found = [{"id": "false_negatives", "severity": "error"}, {"id": "no_gradient", "severity": "error"},
             {"id": "dead_gradients", "severity": "error"}, {"id": f.id, "severity": f.severity}]
    assert R.rank_root_causes(found, {"learned": False})[0]["cause"] == "logging_misstates_loss"
    # other logging findings leave the logged trend readable: they rank as declared (a mechanism with two
    # findings first)
    other = found[:3] + [{"id": "loss_logged_running_mean", "severity": "error"}]
    assert R.rank_root_causes(other, {"learned": False})[0]["cause"] == "no_gradient_path"



def test_verdict_reads_the_logits_own_loss_when_the_log_misstates_it():
    """A stale log at ln(B) while the logits learn: the verdict is judged on the logits' own cross-entropy
    (learned, and says so), and the findings that read the logged level become info notes about that number."""
    import numpy as np

    from diagnose.core.analysis import analyse_run
    from diagnose.core.summary import RunSummary

    _, own = _learning()
    stale = LN_B * (1 + 1e-3 * np.random.default_rng(3).standard_normal(len(own)))
    df = _tracking_frame(own, stale)
    rs = RunSummary("run", chance_loss=LN_B, final_loss={"loss_clip": float(stale[-10:].mean())}, batch_size=64)
    found = analyse_run(rs, df)
    assert rs.verdict.learned and rs.verdict.label.startswith("learned")
    assert "from the logits' own cross-entropy" in rs.verdict.label and "logging_misstates_loss" in rs.verdict.label
    at_chance = [f for f in found if f["id"] == "loss_at_chance"]
    assert at_chance and all(f["severity"] == "info" and f["message"].startswith("About the logged value only")
                             for f in at_chance)
    assert rs.root_causes[0]["cause"] == "logging_misstates_loss"
    # the same log with no logits to compare (nothing shows it misstated): judged at chance, as logged
    bare = RunSummary("run", chance_loss=LN_B, final_loss={"loss_clip": float(stale[-10:].mean())}, batch_size=64)
    found = analyse_run(bare, frame(loss("loss_clip", list(stale), LN_B)))
    assert bare.verdict.label.startswith("did not learn")
    assert any(f["id"] == "loss_at_chance" and f["severity"] == "error" for f in found)

def test_loss_logged_not_tracking_near_misses():
    import numpy as np

    curve, own = _learning()
    n, rng = len(own), np.random.default_rng(4)

    def quiet(reported, own=own):
        assert R.logged_not_tracking(_tracking_frame(own, reported), ctx()) == []

    quiet(own)  # the step's own loss
    quiet(own * 0.25)  # a constant factor (loss_logged_scaled's)
    quiet(0.9 * own + 0.1 * LN_B)  # label smoothing: a floor above the logits' own loss, falling with it
    quiet(0.7 * curve ** 1.2 * (1 + 0.05 * rng.standard_normal(n)))  # another loss on the logits (SigLIP's sigmoid)
    # an MRL sum over 3 prefixes, or a total with a falling extra term: both end above ln(B) while the logits'
    # own loss is far below it, and fall together with it
    quiet(sum(curve * (1 + 0.05 * rng.standard_normal(n)) for _ in range(3)))
    quiet(own + np.linspace(5.0, 3.0, n))
    # a log of the same curve with large noise does not fall by two standard errors, but its relative change is
    # the logits' own: the trends do not disagree
    loud = curve + 5.0 * (-1.0) ** np.arange(n)
    assert not falling(pd.Series(loud))
    quiet(loud)
    # the logits did not learn (at chance throughout): nothing says which of the two is the loss
    quiet(np.linspace(LN_B, 2 * LN_B, n), own=LN_B * (1 + 0.01 * rng.standard_normal(n)))
    # the logits' loss fell but not to learned (0.7 ln B): the trend alone is not the claim
    quiet(np.full(n, LN_B), own=np.linspace(LN_B, 0.7 * LN_B, n))
    quiet(np.cumsum(own[:5]), own=own[:5])  # too few observations
