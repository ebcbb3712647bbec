"""Representation rules (`diagnose.core.rules.representation`): embedding collapse (final and
intermediate), a shared input component, embeddings not unit norm, a loss at chance without collapse."""

from __future__ import annotations

import pandas as pd
import pytest

from diagnose.core import rules as R
from diagnose.core.rules.persistence import PERSIST_MIN_OBS

from .harness import LN_B, WIN, B, N, ctx, frame, ids, loss, one, rec, tail, update_rows


def test_embedding_collapse_evidence():
    cos = [0.1] * 5 + [0.97] * (N - 5)
    df = frame(rec("collapse", "image", "cosine_mean", cos),
               rec("collapse", "image", "effective_rank", {0: 40.0, N - 1: 1.2}))
    f = one(R.embedding_collapse(df, ctx()), "embedding_collapse")
    ev = f.evidence
    assert f.severity == "error" and f.target == "image"
    assert ev["cosine_mean_end"] == pytest.approx(0.97) and ev["cosine_mean_first"] == pytest.approx(0.1)
    assert ev["first_step_above_threshold"] == 5 and ev["first_step"] == 0
    assert ev["effective_rank_first"] == pytest.approx(40.0) and ev["effective_rank_end"] == pytest.approx(1.2)
    assert ev["window_steps"] == [N - WIN, N - 1]


def test_intermediate_collapse_evidence():
    f = one(R.embedding_collapse(rec("collapse", "proj", "cosine_mean", tail(0.2, 0.99)), ctx()),
            "intermediate_collapse")
    assert f.severity == "warning" and f.target == "proj"
    assert f.evidence["output"] == "proj" and f.evidence["cosine_mean_end"] == pytest.approx(0.99)
    assert f.evidence["cosine_mean_first"] == pytest.approx(0.2)


def test_input_shared_component_evidence():
    df = frame(rec("collapse", "input", "cosine_mean", 0.8),
               rec("collapse", "input", "top_sv_share", {0: 0.7, 10: 0.9}))
    f = one(R.input_shared_component(frame(df, loss("loss_clip", 1.0)), ctx()), "input_shared_component")
    assert f.severity == "info" and f.target == "input"
    assert f.evidence["input_cosine_mean"] == pytest.approx(0.8)
    assert f.evidence["top_singular_direction_share"] == pytest.approx(0.8)
    assert f.evidence["steps"] == [0, N - 1]


def _carried(n: int, moved: bool, emb=None) -> pd.DataFrame:
    """Inputs at cosine 0.99, image embeddings collapsed from step 0 (0.9997, or `emb`), the loss flat at ln B,
    the model's update/param 0.2 per step (`moved`: the weights move by their norm in 5 steps) or 1e-3."""
    emb = [0.9997] * n if emb is None else emb
    return frame(rec("collapse", "input", "cosine_mean", {s: 0.99 for s in range(n)}),
                 rec("collapse", "image", "cosine_mean", dict(enumerate(emb))),
                 rec("loss_split", "loss_clip", "value", {s: LN_B + 0.01 * (-1) ** s for s in range(n)}),
                 rec("loss_split", "loss_clip", "chance", {s: LN_B for s in range(n)}),
                 rec("gradient_flow.model", "model", "update_to_param", {s: 0.2 if moved else 1e-3 for s in range(n)}))


def test_inputs_collapsed_like_their_embeddings_from_the_first_step_name_the_shared_input():
    df = _carried(30, moved=False)
    f = one(R.input_shared_component(df, ctx()), "input_collapses_embeddings")
    assert f.severity == "error" and f.target == "input"
    assert f.evidence["collapsed_from_first_step"]["image"]["cosine_first"] == pytest.approx(0.9997)
    # the cause comes first among the run's causes (a tier-2 measurement against the collapse's symptom)
    from diagnose.core.rules.ranking import rank_root_causes
    found = [x.to_dict() for x in [f, *R.embedding_collapse(df, ctx())]]
    assert rank_root_causes(found)[0]["cause"] == "shared_input_component"
    # a slow healthy start looks the same early: no alarm until the state persisted while the weights moved by
    # their own norm (rules.persistence), and none while the collapse eases
    assert not R.input_shared_component.alarm(f, df)
    moved = _carried(30, moved=True)
    assert R.input_shared_component.alarm(one(R.input_shared_component(moved, ctx()), "input_collapses_embeddings"),
                                          moved)
    easing = _carried(30, moved=True, emb=[0.9999 - 0.0001 * s for s in range(30)])
    f = one(R.input_shared_component(easing, ctx()), "input_collapses_embeddings")
    assert not R.input_shared_component.alarm(f, easing)


def test_embeddings_not_normalised_fires_on_raw_norms():
    recs = frame(rec("collapse", "image", "norm_mean", 1 + 3 * R.UNIT_NORM_TOL),
                 rec("collapse", "text", "norm_mean", 1.0))
    f = one(R.embeddings_not_normalised(recs, ctx()), "embeddings_not_normalised")
    assert list(f.evidence["embeddings"]) == ["image"]


def test_embeddings_not_normalised_quiet_on_unit_norms_within_rounding():
    recs = frame(rec("collapse", "image", "norm_mean", 1 + 0.5 * R.UNIT_NORM_TOL),
                 rec("collapse", "text", "norm_mean", 1.0))
    assert R.embeddings_not_normalised(recs, ctx()) == []


def test_an_exp_overflow_on_finite_unnormalised_logits_is_named_as_the_divergence_s_cause():
    """A hand-written exp() InfoNCE over raw dot products / 0.05: the loss is inf from step 0, the same logits'
    stable cross-entropy is finite. The divergence is explained by the norms (the finding ranks not_normalised
    first), not named beside them."""
    nan = float("nan")

    def run(first_loss: float, stable_first: float, norm: float) -> pd.DataFrame:
        return frame(rec("collapse", "image", "norm_mean", {0: norm}), rec("collapse", "text", "norm_mean", {0: norm}),
                     loss("clip", [first_loss] + [nan] * (N - 1)),
                     rec("contrastive", "logits", "loss_diagonal", {0: stable_first}))

    f = one(R.embeddings_not_normalised(run(float("inf"), 3.9, 9.0), ctx()), "unnormalised_logits_overflow")
    assert f.severity == "error" and f.evidence["first_step"] == 0 and f.evidence["embeddings"] == {"image": 9.0,
                                                                                                   "text": 9.0}
    findings = [x.to_dict() for x in R.embeddings_not_normalised(run(float("inf"), 3.9, 9.0), ctx())]
    nonfinite = {"id": "nonfinite_values", "severity": "error"}  # what NonfiniteValues says of the same run
    causes = [c["cause"] for c in R.rank_root_causes([nonfinite, *findings], {"learned": False})]
    assert causes[:2] == ["not_normalised", "nonfinite_divergence"]
    # without the overflow reading the two tie, and the catalogue's order puts the divergence first
    plain = [f for f in findings if f["id"] != "unnormalised_logits_overflow"]
    assert R.rank_root_causes([nonfinite, *plain], {"learned": False})[0]["cause"] == "nonfinite_divergence"
    # near misses: the stable cross-entropy is not finite either (the logits themselves are); the loss starts
    # finite (a later divergence is not this mechanism); unit-norm embeddings
    assert "unnormalised_logits_overflow" not in ids(R.embeddings_not_normalised(run(float("inf"), nan, 9.0), ctx()))
    assert "unnormalised_logits_overflow" not in ids(R.embeddings_not_normalised(run(4.1, 3.9, 9.0), ctx()))
    assert R.embeddings_not_normalised(run(float("inf"), 3.9, 1.0), ctx()) == []


def test_without_logits_the_first_step_s_finite_embeddings_say_the_same():
    """Only embeddings handed over (a SupCon loss over stacked views, normalised along the views axis): the loss is
    NaN from step 0, before any update, on finite embeddings of norm ~4."""
    nan = float("nan")

    def run(first_loss: float, norm_first: float, norm: float = 4.0) -> pd.DataFrame:
        norms = {0: norm_first, **{s: norm for s in range(1, N)}}
        return frame(rec("collapse", "image", "norm_mean", norms), rec("collapse", "text", "norm_mean", norms),
                     loss("clip", [first_loss] + [nan] * (N - 1)))

    f = one(R.embeddings_not_normalised(run(nan, 4.0), ctx()), "unnormalised_logits_overflow")
    assert "stable_cross_entropy_first" not in f.evidence and "before any update, are finite" in f.message
    # near misses: the embeddings of the first step are not finite themselves; the loss starts finite
    assert "unnormalised_logits_overflow" not in ids(R.embeddings_not_normalised(run(nan, nan), ctx()))
    assert "unnormalised_logits_overflow" not in ids(R.embeddings_not_normalised(run(4.1, 4.0), ctx()))


def test_nan_embeddings_are_not_a_collapse():
    nan = float("nan")
    df = frame(rec("collapse", "image", "cosine_mean", [0.1] * 5 + [nan] * (N - 5)))
    assert R.embedding_collapse(df, ctx()) == []


def _raw_norms(given: float, cosines: float, steps: int = 40, every: int = 10) -> pd.DataFrame:
    """Rows of norm 1.6 on every step and, every `every` steps, the logits' and the cosines' loss at their best
    scale (the expensive steps' counterfactual)."""
    cost = range(0, steps, every)
    return frame(rec("collapse", "image", "norm_mean", {s: 1.6 for s in range(steps)}),
                 rec("contrastive", "logits", "loss_best_scale_same_step", {s: given for s in cost}),
                 rec("contrastive", "logits", "loss_cosine_best_scale", {s: cosines for s in cost}))


def test_norms_that_cost_half_the_loss_on_the_same_steps_are_an_error_that_alarms_once_persisted():
    recs = _raw_norms(1.5, 1.5 * (1 - R.NORMS_COST_SHARE) - 0.01)
    f = one(R.embeddings_not_normalised(recs, ctx()), "embeddings_not_normalised")
    assert f.severity == "error" and f.evidence["norms_cost_share"] >= R.NORMS_COST_SHARE
    assert R.embeddings_not_normalised.alarm(f, recs)
    # near misses: off-unit norms on fewer than PERSIST_MIN_OBS steps; the cost read on one expensive step only
    for short in (_raw_norms(1.5, 0.5, steps=PERSIST_MIN_OBS - 1, every=2), _raw_norms(1.5, 0.5, steps=20, every=20)):
        f = one(R.embeddings_not_normalised(short, ctx()), "embeddings_not_normalised")
        assert f.severity == "error" and not R.embeddings_not_normalised.alarm(f, short)


def test_norms_whose_directions_would_not_halve_the_loss_stay_a_warning():
    recs = _raw_norms(1.5, 1.5 * (1 - R.NORMS_COST_SHARE) + 0.01)
    f = one(R.embeddings_not_normalised(recs, ctx()), "embeddings_not_normalised")
    assert f.severity == "warning" and f.evidence["norms_cost_share"] < R.NORMS_COST_SHARE


def test_normalised_over_batch_on_unit_columns_and_not_on_columns_near_one():
    recs = frame(rec("collapse", "image", "norm_mean", 0.7), rec("collapse", "image", "column_norm_dev", 2e-7),
                 rec("collapse", "text", "norm_mean", 1.0), rec("collapse", "text", "column_norm_dev", 0.4))
    f = one(R.embeddings_not_normalised(recs, ctx()), "normalised_over_batch")
    assert f.severity == "error" and list(f.evidence["embeddings"]) == ["image"]
    # near misses: columns within rounding on two steps only; columns near 1 but not at it (rows of dim = batch)
    short = frame(rec("collapse", "image", "norm_mean", {0: 0.7, 1: 0.7}),
                  rec("collapse", "image", "column_norm_dev", {0: 1e-7, 1: 1e-7}))
    assert "normalised_over_batch" not in [f.id for f in R.embeddings_not_normalised(short, ctx())]
    near = frame(rec("collapse", "image", "norm_mean", 1.0), rec("collapse", "image", "column_norm_dev", 0.05))
    assert R.embeddings_not_normalised(near, ctx()) == []


def _chance_run(rank: float, peak_update: float = 1e-2, layer_peak: float = 1e-2):
    return frame(
        rec("loss_split", "loss_clip", "value", LN_B), rec("loss_split", "loss_clip", "chance", LN_B),
        rec("collapse", "image", "effective_rank", rank), rec("collapse", "text", "effective_rank", 20.0),
        *update_rows(peak_update), rec("gradient_flow.layer", "vision.projector", "update_to_param", layer_peak))


def test_chance_not_collapsed_fires_for_spread_embeddings_and_moving_weights():
    f = one(R.chance_not_collapsed(_chance_run(R.SPREAD_EFFECTIVE_RANK * 2), ctx()), "chance_not_collapsed")
    assert f.severity == "error" and f.evidence["effective_rank_end"]["image"] >= R.SPREAD_EFFECTIVE_RANK


def test_chance_not_collapsed_quiet_for_collapse_frozen_weights_huge_steps_or_learning():
    assert R.chance_not_collapsed(_chance_run(R.SPREAD_EFFECTIVE_RANK * 0.5), ctx()) == []  # collapsed
    assert R.chance_not_collapsed(_chance_run(8.0, peak_update=0.1 * R.UPDATE_RATIO_LOW), ctx()) == []  # lr too low
    assert R.chance_not_collapsed(_chance_run(8.0, layer_peak=2 * R.UPDATE_RATIO_HIGH), ctx()) == []  # lr too high
    learning = frame(rec("loss_split", "loss_clip", "value", tail(LN_B, 0.5 * LN_B)),
                     rec("loss_split", "loss_clip", "chance", LN_B),
                     rec("collapse", "image", "effective_rank", 8.0), rec("collapse", "text", "effective_rank", 8.0),
                     *update_rows(1e-2))
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


def test_rows_spread_around_a_mean_norm_of_one_are_not_normalised_and_unit_rows_are():
    spread = frame(rec("collapse", "image", "norm_mean", 1.0), rec("contrastive", "image", "norm_cv", 0.3))
    f = one(R.embeddings_not_normalised(spread, ctx()), "embeddings_not_normalised")
    assert f.evidence["embeddings"]["image"]["norm_cv_median"] == 0.3
    unit = frame(rec("collapse", "image", "norm_mean", 1.0), rec("contrastive", "image", "norm_cv", 1e-7))
    assert R.embeddings_not_normalised(unit, ctx()) == []


def test_embedding_collapse_onto_one_line_with_either_sign():
    # +-one vector (a constant init and a bias-free last layer): mean cosine ~0, one direction holds the energy
    df = frame(rec("collapse", "text", "cosine_mean", [0.01] * N), rec("collapse", "text", "top_sv_share", [1.0] * N),
               rec("collapse", "text", "effective_rank", [1.0] * N))
    f = one(R.embedding_collapse(df, ctx()), "embedding_collapse")
    assert f.target == "text" and f.evidence["sign"] == "either" and f.evidence["top_direction_share_end"] == 1.0
    # near miss: spread-out rows (a healthy batch: the top direction holds a fraction of the energy)
    spread = frame(rec("collapse", "text", "cosine_mean", [0.01] * N),
                   rec("collapse", "text", "top_sv_share", [0.3] * N))
    assert R.embedding_collapse(spread, ctx()) == []
    # and false_negatives leaves such rows to it (every row is +- a duplicate of every other)
    dups = frame(df, rec("contrastive", "text", "duplicate_share", [1.0] * N),
                 rec("contrastive", "logits", "loss_duplicates_masked", [1.0] * N),
                 rec("contrastive", "logits", "loss_diagonal_same_step", [3.0 * LN_B] * N),
                 loss("loss_clip", [3 * LN_B] * N))
    assert "false_negatives" not in ids(R.false_negatives(dups, ctx()))


def _rewritten(cos, updates, end_loss=LN_B):
    return frame(rec("collapse", "text", "cosine_mean", cos),
                 rec("gradient_flow.model", "model", "update_to_param", updates), loss("loss_clip", [end_loss] * N))


def test_collapsed_by_update_where_one_step_rewrites_the_model_and_the_rows_collapse_at_the_next_reading():
    """SGD at Adadelta's lr 1.0: the first step moves the whole model by 2.7x its norm; the text rows, spread out at
    step 0, are copies at step 1 and stay so. The lr is the mechanism, the collapse what it left (ranked after)."""
    cos = [0.51] + [0.999] * (N - 1)
    df = _rewritten(cos, [2.7, 0.4] + [1e-3] * (N - 2))
    f = one(R.collapsed_by_update(df, ctx()), "collapsed_by_update")
    ev = f.evidence
    assert f.severity == "error" and ev["update_step"] == 0 and ev["update_to_param"] == pytest.approx(2.7)
    assert ev["spread_step"] == 0 and ev["collapsed_from_step"] == 1 and ev["readings_collapsed"] == N - 1
    assert R.collapsed_by_update.alarm(f, df)
    collapse = one(R.embedding_collapse(df, ctx()), "embedding_collapse")
    ranked = R.rank_root_causes([collapse.to_dict(), f.to_dict()], {"learned": False})
    assert [c["cause"] for c in ranked] == ["learning_rate_too_high", "embedding_collapse"]


def test_collapsed_by_update_near_misses():
    big = [2.7, 0.4] + [1e-3] * (N - 2)
    for cos, updates, end in (
            ([0.5 + 0.5 * s / (N - 1) for s in range(N)], [0.02] * N, LN_B),  # a collapse built over ordinary steps
            ([0.98] * N, big, LN_B),  # copies from the first reading: no step made them so
            ([0.5] * 10 + [0.99] * (N - 10), big, LN_B),  # the big step long before the collapse
            ([0.51] + [0.999] * (N - 1), big, 0.3 * LN_B),  # a run that learned
            ([0.51] + [0.999] * 9 + [0.5] * (N - 10), big, LN_B)):  # spread out again by the end
        assert R.collapsed_by_update(_rewritten(cos, updates, end), ctx()) == []
