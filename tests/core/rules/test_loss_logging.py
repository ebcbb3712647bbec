"""Loss-logging rules (`diagnose.core.rules.loss_logging`): a logged total that is not the weighted sum
of its components, identical components."""

from __future__ import annotations

import pytest

from diagnose.core import rules as R

from .harness import LN_B, WIN, N, components, ctx, frame, one, rec


def test_loss_logging_inconsistent_evidence():
    gap = {s: (0.25 if s == 7 else -0.1 if s == 9 else 0.0) for s in range(N)}
    df = frame(rec("loss_split", "total", "value", 5.0), rec("loss_split", "total", "total_minus_weighted_sum", gap),
               rec("loss_split", "loss_clip", "weight", 1.0), rec("loss_split", "loss_mrl", "weight", 0.5))
    f = one(R.logged_total(df, ctx()), "loss_logging_inconsistent")
    assert f.severity == "error"
    assert f.evidence == {"steps_inconsistent": 2, "steps_total": N, "max_abs_gap": 0.25, "at_step": 7,
                          "weights": {"loss_clip": 1.0, "loss_mrl": 0.5}}


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
