"""Rules added for the fault benchmark and the root-cause ranking, on hand-made record sets.

Each rule: one record set just past its threshold (fires) and one just short of it (quiet).
Thresholds come from `diagnose.rules`, so the tests follow them if they are retuned.
"""

from __future__ import annotations

import math

from diagnose import rules as R
from diagnose.rules import rank_root_causes

from .test_rules import LN_B, N, B, ctx, frame, ids, one, rec, tail


def _updates(peak: float) -> list:
    return [rec("gradient_flow.model", "model", "update_to_param", [peak] + [peak / 10] * (N - 1))]


# --- update_ratio_low ------------------------------------------------------------------------------


def test_update_ratio_low_fires_when_even_the_peak_step_is_tiny():
    f = one(R.update_ratio_low(frame(*_updates(0.5 * R.UPDATE_RATIO_LOW)), ctx()), "update_ratio_low")
    assert f.severity == "error" and f.evidence["peak_update_to_param"] < R.UPDATE_RATIO_LOW


def test_update_ratio_low_quiet_at_threshold_and_for_a_decayed_schedule_tail():
    assert R.update_ratio_low(frame(*_updates(2 * R.UPDATE_RATIO_LOW)), ctx()) == []
    # a cosine tail: the last steps are tiny, but the run's largest step was healthy
    decayed = rec("gradient_flow.model", "model", "update_to_param", [1e-2] * 5 + [1e-9] * (N - 5))
    assert R.update_ratio_low(frame(decayed), ctx()) == []


# --- embeddings_not_normalised ---------------------------------------------------------------------


def test_embeddings_not_normalised_fires_on_raw_norms():
    recs = frame(rec("collapse", "image", "norm_mean", 1 + 3 * R.UNIT_NORM_TOL), rec("collapse", "text", "norm_mean", 1.0))
    f = one(R.embeddings_not_normalised(recs, ctx()), "embeddings_not_normalised")
    assert list(f.evidence["embeddings"]) == ["image"]


def test_embeddings_not_normalised_quiet_on_unit_norms_within_rounding():
    recs = frame(rec("collapse", "image", "norm_mean", 1 + 0.5 * R.UNIT_NORM_TOL), rec("collapse", "text", "norm_mean", 1.0))
    assert R.embeddings_not_normalised(recs, ctx()) == []


# --- weights_shrinking -----------------------------------------------------------------------------


def test_weights_shrinking_fires_when_the_norm_halves():
    pn = rec("gradient_flow.model", "model", "param_norm", tail(10.0, 10.0 * R.PARAM_SHRINK * 0.8))
    f = one(R.weights_shrinking(frame(pn), ctx(optimizer={"lr": 2e-4, "weight_decay": 1000})),
            "weights_shrinking")
    assert f.evidence["ratio"] < R.PARAM_SHRINK and f.evidence["weight_decay"] == 1000


def test_weights_shrinking_quiet_when_the_norm_holds_or_grows():
    assert R.weights_shrinking(frame(rec("gradient_flow.model", "model", "param_norm", tail(10.0, 10.0 * R.PARAM_SHRINK * 1.2))), ctx()) == []
    assert R.weights_shrinking(frame(rec("gradient_flow.model", "model", "param_norm", tail(10.0, 30.0))), ctx()) == []


# --- chance_not_collapsed --------------------------------------------------------------------------


def _chance_run(rank: float, peak_update: float = 1e-2, layer_peak: float = 1e-2):
    return frame(
        rec("loss_split", "loss_clip", "value", LN_B), rec("loss_split", "loss_clip", "chance", LN_B),
        rec("collapse", "image", "effective_rank", rank), rec("collapse", "text", "effective_rank", 20.0),
        *_updates(peak_update), rec("gradient_flow.layer", "vision.projector", "update_to_param", layer_peak))


def test_chance_not_collapsed_fires_for_spread_embeddings_and_moving_weights():
    f = one(R.chance_not_collapsed(_chance_run(R.SPREAD_EFFECTIVE_RANK * 2), ctx()), "chance_not_collapsed")
    assert f.severity == "error" and f.evidence["effective_rank_end"]["image"] >= R.SPREAD_EFFECTIVE_RANK


def test_chance_not_collapsed_quiet_for_collapse_frozen_weights_huge_steps_or_learning():
    assert R.chance_not_collapsed(_chance_run(R.SPREAD_EFFECTIVE_RANK * 0.5), ctx()) == []  # collapsed
    assert R.chance_not_collapsed(_chance_run(8.0, peak_update=0.1 * R.UPDATE_RATIO_LOW), ctx()) == []  # lr too low
    assert R.chance_not_collapsed(_chance_run(8.0, layer_peak=2 * R.UPDATE_RATIO_HIGH), ctx()) == []  # lr too high
    learning = frame(rec("loss_split", "loss_clip", "value", tail(LN_B, 0.5 * LN_B)), rec("loss_split", "loss_clip", "chance", LN_B),
                     rec("collapse", "image", "effective_rank", 8.0), rec("collapse", "text", "effective_rank", 8.0), *_updates(1e-2))
    assert R.chance_not_collapsed(learning, ctx()) == []


def test_chance_not_collapsed_yields_to_a_learned_ranking():
    # the logits order the pairs (in-batch top-1 at the learned bar): the pairs do share signal, so the
    # loss at chance is a flat softmax (logits_flat, temperature), not misaligned pairs
    bar = R.LEARNED_RECALL_FACTOR / B
    run = _chance_run(R.SPREAD_EFFECTIVE_RANK * 2)
    below = frame(run, rec("softmax_entropy", "logits.image_to_text", "top1_acc", 0.99 * bar))
    above = frame(run, rec("softmax_entropy", "logits.image_to_text", "top1_acc", 1.01 * bar))
    assert ids(R.chance_not_collapsed(below, ctx())) == ["chance_not_collapsed"]
    assert R.chance_not_collapsed(above, ctx()) == []
    assert ids(R.flat_logits(above, ctx())) == ["logits_flat"]


# --- softmax_over_batch ----------------------------------------------------------------------------


def _softmax(axis: int, size: int, ndim: int = 2):
    return frame(rec("softmax_entropy", "vision.pool.softmax", "axis", axis),
                 rec("softmax_entropy", "vision.pool.softmax", "axis_size", size),
                 rec("softmax_entropy", "vision.pool.softmax", "ndim", ndim))


def test_softmax_over_batch_fires_on_axis_0_of_batch_size():
    f = one(R.softmax_over_batch(_softmax(0, B), ctx()), "softmax_over_batch")
    assert f.target == "vision.pool.softmax" and f.evidence["axis_size"] == B


def test_softmax_over_batch_quiet_on_the_token_axis_or_another_size():
    assert R.softmax_over_batch(_softmax(1, 145), ctx()) == []
    assert R.softmax_over_batch(_softmax(0, B + 1), ctx()) == []
    assert R.softmax_over_batch(_softmax(0, B, ndim=1), ctx()) == []


def test_softmax_axis_is_recorded_by_the_probe():
    import torch
    from torch import nn

    from probes import attach

    class Pool(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.softmax = nn.Softmax(dim=dim)

        def forward(self, x):
            return self.softmax(x)

    for dim, axis, size in ((0, 0, 4), (1, 1, 7)):
        m = Pool(dim)
        with attach(m, probes=["softmax_entropy"]) as s:
            m(torch.randn(4, 7))
            s.observe(0)
        df = s.records
        got = {r.metric: r.value for r in df[df.target == "softmax"].itertuples()}
        assert got["axis"] == axis and got["axis_size"] == size and got["ndim"] == 2


# --- root-cause ranking ----------------------------------------------------------------------------


def _f(fid: str, sev: str = "error") -> dict:
    return {"id": fid, "severity": sev}


def test_mechanism_outranks_symptoms_and_contributing_conditions():
    found = [_f("embedding_collapse"), _f("loss_at_chance"), _f("input_shared_component", "warning"),
             _f("update_ratio_high", "warning")]
    assert [c["cause"] for c in rank_root_causes(found, {"learned": False})][:3] == [
        "learning_rate_too_high", "shared_input_component", "embedding_collapse"]
    assert rank_root_causes(found + [_f("nonfinite_values")], {"learned": False})[0]["cause"] == "nonfinite_divergence"


def test_learned_runs_keep_only_direct_mechanisms_and_info_never_counts():
    found = [_f("loss_logging_inconsistent"), _f("update_ratio_high", "warning"), _f("input_shared_component", "info")]
    assert [c["cause"] for c in rank_root_causes(found, {"learned": True})] == ["logging_misstates_loss"]
    assert rank_root_causes([_f("loss_at_chance")], {"learned": False})[0]["cause"] == "unexplained"
    assert rank_root_causes([_f("components_identical", "warning")], {"learned": True}) == []


def test_rules_do_not_fire_on_an_empty_record_set():
    for rule in (R.update_ratio_low, R.embeddings_not_normalised, R.weights_shrinking, R.chance_not_collapsed,
                 R.softmax_over_batch):
        assert rule(frame(), ctx()) == [], rule.__name__
    assert math.isfinite(LN_B)


def test_update_ratio_of_a_layer_grown_from_zero_is_not_an_lr_finding():
    """A logit scale initialised at 0 has update/param ~1/t under Adam while it grows: no scale of its
    own, no verdict on the learning rate; the same ratios on a layer with a norm are a finding."""
    import pandas as pd

    from diagnose.rules import RunContext, run_rules

    rows = []
    for step in range(10):
        for target, norm, ratio in (("<root>", 0.0 if step == 0 else 1e-3 * step, 1.0 / (step + 1)),
                                    ("encoder.0", 5.0, 1e-3)):
            rows += [(step, "gradient_flow.layer", target, "param_norm", norm),
                     (step, "gradient_flow.layer", target, "update_to_param", ratio)]
    df = pd.DataFrame(rows, columns=["step", "probe", "target", "metric", "value"])
    ctx = RunContext("r", 32, 32, None, {}, {"lr": 1e-3})
    assert not [f for f in run_rules(df, ctx, "records") if f.id == "update_ratio_high"]
    df = df.copy()  # record frames are treated as immutable (rules.base caches a per-frame index)
    df.loc[(df["target"] == "<root>") & (df["metric"] == "param_norm"), "value"] = 1e-3
    assert [f.target for f in run_rules(df, ctx, "records") if f.id == "update_ratio_high"] == ["<root>"]
