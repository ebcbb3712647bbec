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
