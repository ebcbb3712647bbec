"""Loss rules (`diagnose.core.rules.loss`): loss at or above ln(B), per component, temperature, few negatives."""

from __future__ import annotations

import math

import pytest

from diagnose.core import rules as R

from .harness import LN_B, TOL, WIN, B, N, ctx, frame, loss, one, rec, tail


def test_loss_at_chance_evidence():
    late = LN_B * (1 + 0.5 * TOL)
    f = one(R.loss_at_chance(loss("loss_clip", tail(1.5, late)), ctx()), "loss_at_chance")
    ev = f.evidence
    assert f.severity == "error" and f.target == "loss_clip"
    assert ev["chance_ln_B"] == pytest.approx(math.log(B), abs=1e-4)
    assert ev["loss_mean"] == pytest.approx(late, abs=1e-4)
    assert ev["implied_candidates"] == pytest.approx(math.exp(late), abs=0.05)
    assert ev["window_steps"] == [N - WIN, N - 1]
    assert ev["first_step_loss"] == pytest.approx(1.5)
    assert ev["relative_gap"] == pytest.approx(0.5 * TOL, abs=1e-4)
    assert ev["batch_size"] == B and ev["component"] == "loss_clip"


def test_loss_above_chance_evidence():
    v = LN_B * 1.5
    f = one(R.loss_at_chance(loss("loss_mrl", v), ctx()), "loss_above_chance")
    assert f.severity == "error" and f.target == "loss_mrl"
    assert f.evidence["relative_gap"] == pytest.approx(0.5, abs=1e-4)
    assert f.evidence["implied_candidates"] == pytest.approx(math.exp(v), abs=0.05)


def test_loss_at_chance_per_component():
    df = frame(loss("loss_clip", LN_B), loss("loss_mrl", LN_B * 0.5))
    assert [(f.id, f.target) for f in R.loss_at_chance(df, ctx())] == [("loss_at_chance", "loss_clip")]


def test_temperature_evidence():
    f = one(R.temperature(rec("loss_split", "extras", "logit_scale", {0: 14.2857, 10: 100.0}), ctx()),
            "temperature_at_clamp")
    assert f.severity == "warning"
    assert f.evidence == {"logit_scale_first": 14.286, "logit_scale_end": 100.0, "clamp": 100.0, "steps": [0, 10]}
    f = one(R.temperature(rec("loss_split", "extras", "logit_scale", {0: 14.2857, 10: 1.05}), ctx()),
            "temperature_toward_1")
    assert f.severity == "warning" and f.evidence["logit_scale_end"] == pytest.approx(1.05)


@pytest.mark.parametrize("batch, severity",
                         [(R.FEW_NEGATIVES_WARN, "warning"), (R.FEW_NEGATIVES_ERROR, "error"), (2, "error")])
def test_few_negatives_evidence(batch, severity):
    f = one(R.few_negatives(frame(), ctx(batch_size=batch)), "few_negatives")
    assert f.severity == severity
    assert f.evidence == {"batch_size": batch, "negatives_per_row": batch - 1,
                          "chance_ln_B": pytest.approx(math.log(batch), abs=1e-4)}


def test_few_negatives_reads_the_logits_columns_over_the_declared_batch():
    micro = frame(rec("contrastive", "logits", "cols", 4.0), rec("contrastive", "logits", "rows", 4.0))
    f = one(R.few_negatives(micro, ctx(batch_size=64)), "few_negatives")
    assert f.severity == "error" and f.evidence["negatives_per_row"] == 3
    full = frame(rec("contrastive", "logits", "cols", 64.0), rec("contrastive", "logits", "rows", 64.0))
    assert R.few_negatives(full, ctx(batch_size=64)) == []


def test_a_scale_that_floors_the_loss_at_chance_explains_a_loss_at_chance_with_spread_out_embeddings():
    """log(0.07) passed as the initial logit scale: at scale ~0.07 no embeddings can leave the chance band, so the
    pairs-carry-no-signal reading of spread-out embeddings at chance ranks after the temperature."""
    unit = frame(rec("collapse", "image", "norm_mean", 1.0), rec("collapse", "text", "norm_mean", 1.0))
    df = frame(rec("loss_split", "extras", "logit_scale", [0.07, 0.078]), loss("loss_clip", LN_B), unit)
    f = one(R.temperature(df, ctx()), "scale_floors_loss")
    assert f.evidence["loss_floor"] == pytest.approx(math.log1p((B - 1) * math.exp(-0.078 * B / (B - 1))), abs=1e-4)
    assert f.evidence["loss_floor_share_of_ln_B"] > 1 - R.CHANCE_REL_TOL
    spread = {"id": "chance_not_collapsed", "severity": "error", "run": "r", "message": "", "evidence": {}}
    ranked = [c["cause"] for c in R.rank_root_causes([spread, f.to_dict()])]
    assert ranked == ["temperature", "misaligned_pairs"]
