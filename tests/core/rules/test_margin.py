"""The verdict rule `not_learned_far_short` (`diagnose.core.rules.margin`): a run below chance but less than
half of the way to the learning margin is an error finding; the thresholds are derived from the definitions."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from diagnose.core.analysis import analyse_run
from diagnose.core.definitions import CHANCE_REL_TOL, LEARNED_LOSS_FRACTION, LEARNED_RECALL_FACTOR
from diagnose.core.rules.catalogue import far_short_of_margin
from diagnose.core.rules.margin import FAR_SHORT_LOSS_FRACTION, FAR_SHORT_RECALL_FACTOR
from diagnose.core.summary import RunSummary

from .harness import ctx

LN_B = math.log(64)
CHANCE1 = 1 / 1024


def run(loss_fraction: float, r1_factor: float | None = None) -> dict:
    r = {} if r1_factor is None else {"r@1": r1_factor * CHANCE1, "chance@1": CHANCE1}
    return {"name": "run", "final_loss": {"loss_clip": loss_fraction * LN_B}, "chance_loss": LN_B, "retrieval": r,
            "verdict": {"learned": False}}


def test_thresholds_are_the_midpoints_between_chance_and_the_learning_margin():
    assert FAR_SHORT_LOSS_FRACTION == pytest.approx((1 + LEARNED_LOSS_FRACTION) / 2)
    assert FAR_SHORT_RECALL_FACTOR == pytest.approx((1 + LEARNED_RECALL_FACTOR) / 2)


def test_fires_just_past_the_loss_midpoint_and_is_quiet_just_short_of_it():
    f, = far_short_of_margin(run(FAR_SHORT_LOSS_FRACTION * 1.01), ctx())
    assert f.id == "not_learned_far_short" and f.severity == "error" and f.target == "loss_clip"
    assert f.evidence["share_of_the_way_loss"] == pytest.approx((1 - FAR_SHORT_LOSS_FRACTION * 1.01)
                                                                / (1 - LEARNED_LOSS_FRACTION), abs=1e-3)
    assert far_short_of_margin(run(FAR_SHORT_LOSS_FRACTION * 0.99), ctx()) == []


def test_held_out_recall_below_its_midpoint_fires_even_with_a_loss_past_the_loss_midpoint():
    loss = FAR_SHORT_LOSS_FRACTION * 0.9  # past half of the way on the loss
    f, = far_short_of_margin(run(loss, FAR_SHORT_RECALL_FACTOR * 0.95), ctx())
    assert "held-out R@1" in f.message and f.evidence["r1_over_chance"] == pytest.approx(
        FAR_SHORT_RECALL_FACTOR * 0.95, abs=0.01)
    assert far_short_of_margin(run(loss, FAR_SHORT_RECALL_FACTOR * 1.05), ctx()) == []


def test_quiet_at_chance_above_it_and_when_learned():
    assert far_short_of_margin(run(1 - CHANCE_REL_TOL / 2), ctx()) == []  # loss_at_chance's case
    assert far_short_of_margin(run(1.2), ctx()) == []  # loss_above_chance's case
    learned = run(0.3, 20.0) | {"verdict": {"learned": True}}
    assert far_short_of_margin(learned, ctx()) == []


def test_a_partly_learned_run_far_short_of_the_margin_gets_an_error_finding():
    """A run 0.87 x ln(B) with R@1 4x chance: verdict "partly learned", and now an error finding."""
    rs = RunSummary("perceiver", chance_loss=LN_B, final_loss={"loss_clip": 0.87 * LN_B},
                    retrieval={"r@1": 4 * CHANCE1, "chance@1": CHANCE1}, batch_size=64)
    found = analyse_run(rs, pd.DataFrame(columns=["step", "probe", "target", "metric", "value"]))
    assert rs.verdict.label.startswith("partly learned")
    errors = [f for f in found if f["severity"] == "error"]
    assert [f["id"] for f in errors] == ["not_learned_far_short"]
    assert errors[0]["evidence"]["r1_over_chance"] == pytest.approx(4.0)
