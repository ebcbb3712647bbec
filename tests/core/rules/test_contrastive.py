"""Rules on the contrastive step read directly (rules.contrastive): a firing and a near-miss case each."""

from __future__ import annotations

import math

import pytest

from diagnose.core import rules as R
from diagnose.core.rules.contrastive import TARGETS_ON_DIAGONAL_MIN

from .harness import LN_B, ctx, frame, loss, one, rec, tail
from .test_persistence import N, moving, noisy


def _dups(share, masked, full, cos=0.3):
    return frame(rec("contrastive", "text", "duplicate_share", share),
                 rec("contrastive", "logits", "loss_duplicates_masked", masked),
                 rec("contrastive", "logits", "loss_diagonal_same_step", full),
                 rec("collapse", "text", "cosine_mean", [cos] * N))


def test_false_negatives_fires_when_the_masked_counterfactual_shows_the_cost():
    df = frame(_dups([0.5] * N, [1.5] * N, [2.5] * N), loss("loss_clip", noisy([2.5] * N)), moving())
    f = one(R.false_negatives(df, ctx()), "false_negatives")
    assert f.severity == "error" and f.evidence["gap_share_of_loss"] == 0.4
    assert R.false_negatives.alarm(f, df) is True


def test_false_negatives_on_logits_that_do_not_rank_yet_are_read_by_the_least_loss_the_copies_allow():
    """Copies of a caption in most rows, logits still flat: taking k copies out of B candidates barely moves the loss
    (5%), but no model can take those rows below ln(1 + k): that floor (45% of the loss) is what the copies cost."""
    full = [LN_B] * N
    apart = rec("contrastive", "text", "cosine_distinct", [0.4] * N)  # distinct captions told apart: copies in the data
    floored = frame(_dups([0.9] * N, [0.95 * LN_B] * N, full), rec("contrastive", "text", "loss_floor_duplicates",
                                                                    [0.45 * LN_B] * N),
                    apart, loss("loss_clip", noisy(full)), moving())
    f = one(R.false_negatives(floored, ctx()), "false_negatives")
    assert f.severity == "error" and f.evidence["gap_share_of_loss"] == pytest.approx(0.05)
    assert f.evidence["floor_share_of_loss"] == pytest.approx(0.45) and "ln(1 + copies)" in f.message
    assert R.false_negatives.alarm(f, floored) is True
    # near miss: a few rows with one copy each (the same pair sampled twice): a floor of 4% of the loss, an info
    few = frame(_dups([0.1] * N, [0.98 * LN_B] * N, full), rec("contrastive", "text", "loss_floor_duplicates",
                                                               [0.04 * LN_B] * N),
                apart, loss("loss_clip", noisy(full)), moving())
    g = one(R.false_negatives(few, ctx()), "false_negatives")
    assert g.severity == "info" and R.false_negatives.alarm(g, few) is False
    # near miss: rows that coincide more and more as a tower partly collapses (10% of the rows with a copy at the first
    # reading, the data's; 70% later, with a floor of 45% of the loss): the floor is the data's, read at the first
    # observation (2% of the loss); the counterfactual decides, as before
    collapsing = frame(rec("contrastive", "text", "duplicate_share", [0.1] + [0.7] * (N - 1)),
                       rec("contrastive", "logits", "loss_duplicates_masked", [0.95 * LN_B] * N),
                       rec("contrastive", "logits", "loss_diagonal_same_step", full),
                       rec("contrastive", "text", "loss_floor_duplicates", [0.02 * LN_B] + [0.45 * LN_B] * (N - 1)),
                       rec("collapse", "text", "cosine_mean", [0.3] * N), apart, loss("loss_clip", noisy(full)),
                       moving())
    h = one(R.false_negatives(collapsing, ctx()), "false_negatives")
    assert h.severity == "info" and h.evidence["floor_share_of_loss"] == pytest.approx(0.02)
    assert R.false_negatives.alarm(h, collapsing) is False
    # near miss: the pairs that are not copies crowded at the first reading (cosine 0.97): coinciding rows may be a
    # tower that barely tells inputs apart, not copies; no floor
    crowded = frame(_dups([0.9] * N, [0.95 * LN_B] * N, full), rec("contrastive", "text", "loss_floor_duplicates",
                                                                    [0.45 * LN_B] * N),
                    rec("contrastive", "text", "cosine_distinct", [0.97] * N), loss("loss_clip", noisy(full)), moving())
    k = one(R.false_negatives(crowded, ctx()), "false_negatives")
    assert k.severity == "info" and k.evidence["loss_floor_duplicates"] is None


def test_false_negatives_alarm_while_the_run_partly_learns_unless_the_gap_shrinks():
    import numpy as np

    # the loss falls (the run partly learns) while the duplicates' share of it stays: still an alarm
    falling_loss = list(np.linspace(1.1 * LN_B, 0.8 * LN_B, N))
    full = [0.9 * v for v in falling_loss]
    df = frame(_dups([0.5] * N, [0.7 * v for v in full], full), loss("loss_clip", falling_loss), moving(per_step=1e-3))
    f = one(R.false_negatives(df, ctx()), "false_negatives")
    assert f.severity == "error" and R.false_negatives.alarm(f, df) is True
    # near misses: the gap shrinks over the span (the model learns to tell the duplicates apart); too few
    # observations with duplicates in the batch
    shrinking = frame(_dups([0.5] * N, [v * (0.5 + 0.4 * i / N) for i, v in enumerate(full)], full),
                      loss("loss_clip", falling_loss), moving(per_step=1e-3))
    g = one(R.false_negatives(shrinking, ctx()), "false_negatives")
    assert R.false_negatives.alarm(g, shrinking) is False
    late = frame(_dups([0.0] * (N - 4) + [0.5] * 4, [0.7 * v for v in full], full), loss("loss_clip", falling_loss),
                 moving(per_step=1e-3))
    h = one(R.false_negatives(late, ctx()), "false_negatives")
    assert R.false_negatives.alarm(h, late) is False


def test_false_negatives_in_a_learned_run_are_an_error_once_they_hold_most_of_the_loss():
    low = 0.3 * LN_B  # below the learned bar
    holds = frame(_dups([0.5] * N, [low * (1 - R.HOLDS_LOSS_SHARE) - 0.01] * N, [low] * N),
                  loss("loss_clip", [low] * N), moving())
    assert one(R.false_negatives(holds, ctx()), "false_negatives").severity == "error"
    # near miss: a tenth to half of the loss in a learned run is a warning (sampled with replacement, say)
    part = frame(_dups([0.5] * N, [low * (1 - R.HOLDS_LOSS_SHARE) + 0.01] * N, [low] * N),
                 loss("loss_clip", [low] * N), moving())
    assert one(R.false_negatives(part, ctx()), "false_negatives").severity == "warning"


def test_false_negatives_near_misses():
    # duplicates that cost nothing on these logits (masked = unmasked): a measurement, no cause
    cheap = frame(_dups([0.5] * N, [2.5] * N, [2.5] * N), loss("loss_clip", [2.5] * N), moving())
    assert one(R.false_negatives(cheap, ctx()), "false_negatives").severity == "info"
    # few duplicates: nothing
    rare = frame(_dups([0.01] * N, [1.5] * N, [2.5] * N), loss("loss_clip", [2.5] * N), moving())
    assert R.false_negatives(rare, ctx()) == []
    # collapsed embeddings make every row a duplicate: embedding_collapse's finding, not this one
    collapsed = frame(_dups([1.0] * N, [0.1] * N, [LN_B] * N, cos=0.99), loss("loss_clip", [LN_B] * N), moving())
    assert R.false_negatives(collapsed, ctx()) == []


def test_false_negatives_seen_while_the_rows_were_spread_out_hold_after_a_collapse():
    # two captions per batch: every row has copies from step 0, while the text embeddings are still spread out
    # (mean cosine 0.8); the embeddings collapse later, and the copies were there before it
    cos = [0.8] * 3 + [0.99] * (N - 3)
    df = frame(rec("contrastive", "text", "duplicate_share", [1.0] * N),
               rec("contrastive", "logits", "loss_duplicates_masked", [0.8 * LN_B] * N),
               rec("contrastive", "logits", "loss_diagonal_same_step", [LN_B] * N),
               rec("collapse", "text", "cosine_mean", cos), loss("loss_clip", [LN_B] * N), moving())
    f = one(R.false_negatives(df, ctx()), "false_negatives")
    assert f.severity == "error" and f.target == "text"
    # near miss: rows that turn into twins on the way to a collapse (none at the first reading, spread out at the
    # third while a few already coincide): the collapse's, not the data's
    later = frame(rec("contrastive", "text", "duplicate_share", [0.0, 0.0, 0.2] + [1.0] * (N - 3)),
                  rec("contrastive", "logits", "loss_duplicates_masked", [0.8 * LN_B] * N),
                  rec("contrastive", "logits", "loss_diagonal_same_step", [LN_B] * N),
                  rec("collapse", "text", "cosine_mean", [0.3, 0.6, 0.9] + [0.99] * (N - 3)),
                  loss("loss_clip", [LN_B] * N), moving())
    assert R.false_negatives(later, ctx()) == []


def test_targets_off_diagonal_and_its_near_miss():
    shape = frame(rec("contrastive", "logits", "rows", 64), rec("contrastive", "logits", "cols", 64))
    bad = frame(shape, rec("contrastive", "logits", "target_on_diagonal", 1 / 64),
                rec("contrastive", "logits", "targets_distinct", 1 / 64), loss("loss_clip", [0.1] * N))
    f = one(R.targets_off_diagonal(bad, ctx()), "targets_off_diagonal")
    assert f.evidence["target_on_diagonal"] < 0.05
    good = frame(shape, rec("contrastive", "logits", "target_on_diagonal", 1.0), loss("loss_clip", [0.1] * N))
    assert R.targets_off_diagonal(good, ctx()) == []
    # two ranks' rows that both kept the single-GPU arange: half of them point at the other rank's pair
    half = frame(shape, rec("contrastive", "logits", "target_on_diagonal", 0.5), loss("loss_clip", [0.8 * LN_B] * N))
    assert one(R.targets_off_diagonal(half, ctx()), "targets_off_diagonal").evidence["target_on_diagonal"] == 0.5
    # near miss: a few rows whose target is a duplicate's column (one in 32)
    few = frame(shape, rec("contrastive", "logits", "target_on_diagonal", 31 / 32), loss("loss_clip", [0.8 * LN_B] * N))
    assert R.targets_off_diagonal(few, ctx()) == []
    # gathered features: rectangular logits, targets offset by rank x B are right
    gathered = frame(rec("contrastive", "logits", "rows", 64), rec("contrastive", "logits", "cols", 128),
                     rec("contrastive", "logits", "target_on_diagonal", 0.0), loss("loss_clip", [0.1] * N))
    assert R.targets_off_diagonal(gathered, ctx()) == []


def test_loss_not_about_pairs_counterfactual_and_near_miss():
    shape = frame(rec("contrastive", "logits", "rows", 64), rec("contrastive", "logits", "cols", 64))
    # other targets trained from the start: at step 0 the reported loss is where the diagonal is, then falls
    wrong = frame(shape, rec("contrastive", "logits", "loss_diagonal", 1.3 * LN_B),
                  loss("loss_clip", [1.3 * LN_B] + [0.2 * LN_B] * (N - 1)))
    assert one(R.targets_off_diagonal(wrong, ctx()), "loss_not_about_pairs").evidence["loss_on_diagonal_end"] > LN_B
    right = frame(shape, rec("contrastive", "logits", "loss_diagonal", 0.2 * LN_B), loss("loss_clip", [0.2 * LN_B] * N))
    assert R.targets_off_diagonal(right, ctx()) == []
    # a log scaled from the first step (a quarter of the objective): at step 0 the logits score no pair, and
    # against any targets their loss is the diagonal's, so a reported loss 4x below it is no loss of other targets
    scaled = frame(shape, rec("contrastive", "logits", "loss_diagonal", 1.3 * LN_B),
                   loss("loss_clip", [1.3 * LN_B / 4] * N))
    assert R.targets_off_diagonal(scaled, ctx()) == []


def test_logits_candidates_mismatch_and_near_miss():
    df = frame(rec("contrastive", "logits", "rows", 64), rec("contrastive", "logits", "cols", 256))
    f = one(R.logits_candidates(df, ctx()), "logits_candidates_mismatch")
    assert f.evidence["logits_cols"] == 256 and f.evidence["declared_candidates"] == 64
    assert R.logits_candidates(df, R.RunContext("run", 64, 256)) == []


def test_embedding_without_gradient_needs_the_mechanism_in_the_model():
    no_grad = frame(rec("contrastive", "text", "requires_grad", 0.0), rec("contrastive", "image", "requires_grad", 1.0),
                    rec("contrastive", "model", "frozen_numel", 1000.0), loss("loss_clip", [LN_B] * N))
    f = one(R.embedding_without_gradient(no_grad, ctx()), "embedding_without_gradient")
    assert f.target == "text" and f.severity == "error"
    # detached only on its way to observe(): every parameter trainable and getting gradients
    detached = frame(rec("contrastive", "text", "requires_grad", 0.0), rec("contrastive", "model", "frozen_numel", 0.0),
                     loss("loss_clip", [LN_B] * N))
    assert R.embedding_without_gradient(detached, ctx()) == []
    # the only parameter without a gradient is an unused temperature scalar: still no mechanism in the model
    unused = frame(detached, rec("gradient_flow", "logit_scale", "grad_is_none", 1.0),
                   rec("gradient_flow", "logit_scale", "numel", 1.0))
    assert R.embedding_without_gradient(unused, ctx()) == []
    cut = frame(detached, rec("gradient_flow", "text.weight", "grad_is_none", 1.0),
                rec("gradient_flow", "text.weight", "numel", 64.0))
    assert one(R.embedding_without_gradient(cut, ctx()), "embedding_without_gradient").target == "text"


def test_a_locked_tower_beside_one_whose_parameters_no_optimizer_holds_is_a_warning():
    """One tower locked, the other with a gradient (LiT): what decides is whether the other learns. With parameters
    on the loss's path outside every param group it cannot: that finding is the failure, the locked side a warning
    (a case unfrozen after its optimizer was built); without them the locked tower stays an error."""
    locked = frame(rec("contrastive", "text", "requires_grad", 0.0), rec("contrastive", "image", "requires_grad", 1.0),
                   rec("contrastive", "model", "frozen_numel", 1000.0), loss("loss_clip", [LN_B] * N))
    stalled = frame(locked, rec("optimizer", "outside", "with_grad", 4.0))
    f = one(R.embedding_without_gradient(stalled, ctx()), "embedding_without_gradient")
    assert f.severity == "warning" and f.evidence["other_tower_outside_optimizer"] is True
    assert "params_outside_optimizer" in f.message
    assert one(R.embedding_without_gradient(locked, ctx()), "embedding_without_gradient").severity == "error"
    inside = frame(locked, rec("optimizer", "outside", "with_grad", 0.0))
    assert one(R.embedding_without_gradient(inside, ctx()), "embedding_without_gradient").severity == "error"
    both_locked = frame(rec("contrastive", "text", "requires_grad", 0.0),
                        rec("contrastive", "image", "requires_grad", 0.0),
                        rec("contrastive", "model", "frozen_numel", 1000.0), loss("loss_clip", [LN_B] * N),
                        rec("optimizer", "outside", "with_grad", 4.0))
    assert {f.severity for f in R.embedding_without_gradient(both_locked, ctx())} == {"error"}


def test_embedding_without_gradient_alarms_only_when_it_persists():
    def run(requires_grad):
        n = len(requires_grad)
        return frame(rec("contrastive", "text", "requires_grad", requires_grad),
                     rec("contrastive", "model", "frozen_numel", [1000.0] * n), loss("loss_clip", noisy([LN_B] * n)),
                     moving(n))
    stuck_run = run([0.0] * N)
    assert R.embedding_without_gradient.alarm(one(R.embedding_without_gradient(stuck_run, ctx()),
                                                  "embedding_without_gradient"), stuck_run) is True
    warm_start = run([0.0] * 5)  # the first steps of a schedule that unfreezes the tower at step 5
    assert R.embedding_without_gradient.alarm(one(R.embedding_without_gradient(warm_start, ctx()),
                                                  "embedding_without_gradient"), warm_start) is False


def test_no_embedding_with_a_gradient_alarms_without_the_weights_moving():
    # both towers frozen (only a logit scale trains): nothing on either path can move the weights by their
    # norm, so persistence is counted in observations
    def run(n, per_step=1e-4):
        return frame(rec("contrastive", "text", "requires_grad", [0.0] * n),
                     rec("contrastive", "image", "requires_grad", [0.0] * n),
                     rec("contrastive", "model", "frozen_numel", [1000.0] * n), loss("loss_clip", noisy([LN_B] * n)),
                     moving(n, per_step=per_step))
    both = run(N)
    found = R.embedding_without_gradient(both, ctx())
    assert {f.target for f in found} == {"image", "text"}
    assert all(R.embedding_without_gradient.alarm(f, both) for f in found)
    # near misses: too few observations yet; one tower still training (the weights must move first)
    early = run(5)
    assert not any(R.embedding_without_gradient.alarm(f, early) for f in R.embedding_without_gradient(early, ctx()))
    one_side = frame(rec("contrastive", "text", "requires_grad", [0.0] * N),
                     rec("contrastive", "image", "requires_grad", [1.0] * N),
                     rec("contrastive", "model", "frozen_numel", [1000.0] * N), loss("loss_clip", noisy([LN_B] * N)),
                     moving(N, per_step=1e-4))
    g = one(R.embedding_without_gradient(one_side, ctx()), "embedding_without_gradient")
    assert R.embedding_without_gradient.alarm(g, one_side) is False


def _ce_parts(steps: int = 12, b: int = 16, seed: int = 0):
    """Per step: the four cross-entropies the contrastive probe records for random (b, b) logits."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("loss_i2t", "loss_t2i", "loss_zero_i2t", "loss_zero_t2i")}
    for _ in range(steps):
        z = 3.0 * rng.normal(size=(b, b))
        lse_r, lse_c = np.log(np.exp(z).sum(1)), np.log(np.exp(z).sum(0))
        d = np.diag(z)
        for k, v in (("loss_i2t", lse_r - d), ("loss_t2i", lse_c - d), ("loss_zero_i2t", lse_r - z[:, 0]),
                     ("loss_zero_t2i", lse_c - z[0, :])):
            out[k].append(float(v.mean()))
    return out


def test_targets_at_column_zero_reconstructed_from_the_reported_loss():
    parts = _ce_parts()
    shape = frame(rec("contrastive", "logits", "rows", 16), rec("contrastive", "logits", "cols", 16),
                  *[rec("contrastive", "logits", k, v) for k, v in parts.items()])
    zeros = [0.5 * (a + b) for a, b in zip(parts["loss_zero_i2t"], parts["loss_zero_t2i"])]
    f = one(R.targets_off_diagonal(frame(shape, loss("loss_clip", zeros)), ctx()), "targets_off_diagonal")
    assert f.evidence["direction"] == "symmetric" and f.evidence["steps_compared"] == 12
    # one direction only (MoCo's own loss is image->text)
    g = one(R.targets_off_diagonal(frame(shape, loss("loss_clip", parts["loss_zero_i2t"])), ctx()),
            "targets_off_diagonal")
    assert g.evidence["direction"] == "image->text"
    # near misses: the loss of the diagonal; a loss close to the column-0 one but not it (1e-3 apart)
    diag = [0.5 * (a + b) for a, b in zip(parts["loss_i2t"], parts["loss_t2i"])]
    assert R.targets_off_diagonal(frame(shape, loss("loss_clip", diag)), ctx()) == []
    near = [z * 1.001 for z in zeros]
    assert R.targets_off_diagonal(frame(shape, loss("loss_clip", near)), ctx()) == []


def test_soft_targets_flat_fires_on_near_uniform_targets_and_not_on_smoothed_ones():
    flat = frame(rec("contrastive", "logits", "soft_target_entropy", 0.9995),
                 rec("contrastive", "logits", "soft_target_on_diagonal", 1.0))
    f = one(R.soft_targets_flat(flat, ctx()), "soft_targets_flat")
    assert f.severity == "error" and f.evidence["entropy_frac_end"] == 0.9995
    # near misses: label smoothing (0.18 of ln(64)), a target that sharpens as the run goes, too few readings
    assert R.soft_targets_flat(rec("contrastive", "logits", "soft_target_entropy", 0.18), ctx()) == []
    assert R.soft_targets_flat(rec("contrastive", "logits", "soft_target_entropy", tail(0.999, 0.9)), ctx()) == []
    assert R.soft_targets_flat(rec("contrastive", "logits", "soft_target_entropy", [0.999] * 5), ctx()) == []


def _gathered_twins(share: float, full: float, masked: float, n: int = 8):
    """Rectangular logits whose positive columns have identical twins on `share` of the rows (every 10 steps)."""
    steps = range(0, 10 * n, 10)
    return frame(rec("contrastive", "logits", "twin_share", {s: share for s in steps}),
                 rec("contrastive", "logits", "loss_target_same_step", {s: full for s in steps}),
                 rec("contrastive", "logits", "loss_twins_masked", {s: masked for s in steps}),
                 loss("loss_clip", {s: full for s in steps}))


def test_twin_candidates_of_gathered_logits_are_false_negatives_that_alarm():
    recs = _gathered_twins(1.0, 0.8 * LN_B, 0.3 * LN_B)
    f = one(R.false_negatives(recs, ctx()), "false_negatives")
    assert f.target == "candidates" and f.severity == "error" and f.evidence["gap_share_of_loss"] > 0.5
    assert R.false_negatives.alarm(f, recs)
    # near misses: no twin columns; twins whose masking barely changes the loss
    assert R.false_negatives(_gathered_twins(0.0, 0.8 * LN_B, 0.8 * LN_B), ctx()) == []
    small = one(R.false_negatives(_gathered_twins(1.0, 0.8 * LN_B, 0.79 * LN_B), ctx()), "false_negatives")
    assert small.severity == "info"


def _located(at: float, located: float = 1.0):
    return frame(rec("contrastive", "logits", "rows", 32), rec("contrastive", "logits", "cols", 96),
                 rec("contrastive", "logits", "pairs_located", located),
                 rec("contrastive", "logits", "target_at_pair", at))


def test_targets_that_miss_the_columns_holding_the_pairs_captions_in_rectangular_logits():
    f = one(R.targets_off_diagonal(_located(0.0), ctx()), "targets_off_diagonal")
    assert f.severity == "error" and f.evidence["target_at_pair"] == 0.0 and f.evidence["candidates_end"] == 96
    # near misses: targets at the pairs' columns; the pairs' captions not among the candidates (nothing to hold
    # the targets against)
    assert R.targets_off_diagonal(_located(TARGETS_ON_DIAGONAL_MIN), ctx()) == []
    assert R.targets_off_diagonal(_located(0.0, located=0.5), ctx()) == []


def _drift(rows, prev, side="text", n=20):
    return frame(rec("batch_drift", side, "rows_cosine", [rows] * n),
                 rec("batch_drift", side, "mean_cosine_prev", {s: prev for s in range(1, n)}))


def test_batch_of_copies_one_item_per_batch_with_the_counterfactual_and_near_misses():
    # every caption of a batch the same (a class-sorted set read in order), a different one in each batch
    masked = frame(rec("contrastive", "text", "loss_duplicates_masked", {0: 0.0, 10: 0.0}),
                   rec("contrastive", "logits", "loss_diagonal_same_step", {0: LN_B, 10: LN_B}))
    df = frame(_drift(1.0, 0.27), masked, loss("loss_clip", [LN_B] * N), moving())
    f = one(R.batch_of_copies(df, ctx()), "batch_of_copies")
    assert f.severity == "error" and f.target == "text"
    assert f.evidence["batch_to_batch_cosine_median"] == 0.27 and f.evidence["loss_duplicates_masked"] == 0.0
    assert "shuffle" in f.next_step.lower()
    # a run that left chance anyway: a warning
    below = frame(_drift(1.0, 0.27), loss("loss_clip", [0.5 * LN_B] * N), moving())
    assert one(R.batch_of_copies(below, ctx()), "batch_of_copies").severity == "warning"
    # near misses: a tower that discards its input (copies, the same vector for every batch: 0.999); rows that are
    # not copies (a batch of one class whose images differ: 0.9997 < 0.9999); too few batches read
    assert R.batch_of_copies(frame(_drift(1.0, 0.999), loss("loss_clip", [LN_B] * N), moving()), ctx()) == []
    assert R.batch_of_copies(frame(_drift(0.9997, 0.27), loss("loss_clip", [LN_B] * N), moving()), ctx()) == []
    assert R.batch_of_copies(frame(_drift(1.0, 0.27, n=5), loss("loss_clip", [LN_B] * N), moving()), ctx()) == []


def test_batch_of_copies_reads_classes_served_in_runs_of_batches():
    # a label-grouped sampler: two batches per class, so the vector turns on every other batch only (median ~1)
    prev = {s: (0.9999 if s % 2 else -0.3) for s in range(1, 20)}
    df = frame(rec("batch_drift", "text", "rows_cosine", [1.0] * 20),
               rec("batch_drift", "text", "mean_cosine_prev", prev), loss("loss_clip", [LN_B] * N), moving())
    f = one(R.batch_of_copies(df, ctx()), "batch_of_copies")
    assert f.evidence["batch_to_batch_turns"] == 9 and f.evidence["batch_pairs"] == 19
    assert f.evidence["batch_to_batch_cosine_median"] > 0.99
    # near miss: a tower that discards its input, turned by two large steps (DISTINCT_BATCHES_MIN = 3 turns needed)
    prev = {s: (0.2 if s in (5, 11) else 0.9995) for s in range(1, 20)}
    df = frame(rec("batch_drift", "text", "rows_cosine", [1.0] * 20),
               rec("batch_drift", "text", "mean_cosine_prev", prev), loss("loss_clip", [LN_B] * N), moving())
    assert R.batch_of_copies(df, ctx()) == []


def test_batch_of_copies_ranks_before_the_collapse_it_explains():
    # the same records read by the collapse rule (text rows copies from the first step): both hold, and the batch of
    # copies is why the rows coincide, so false_negatives ranks first
    df = frame(_drift(1.0, 0.27), rec("collapse", "text", "cosine_mean", [1.0] * N), loss("loss_clip", [LN_B] * N),
               moving())
    found = [*R.batch_of_copies(df, ctx()), *R.embedding_collapse(df, ctx())]
    assert {f.id for f in found} == {"batch_of_copies", "embedding_collapse"}
    causes = R.rank_root_causes([f.to_dict() for f in found], {"learned": False})
    assert [c["cause"] for c in causes][:2] == ["false_negatives", "embedding_collapse"]


def test_batch_of_copies_stands_down_where_the_model_mixes_the_samples_of_a_batch():
    # attention over the batch axis gives every row the batch's own vector, a new one each batch: the model's copies
    mixed = frame(rec("batch_mixing", "<root>", "mixed_rel", {1: 0.4, 3: 0.5}))
    df = frame(_drift(1.0, 0.27), mixed, loss("loss_clip", [LN_B] * N), moving())
    assert R.batch_of_copies(df, ctx()) == []
    clean = frame(rec("batch_mixing", "<root>", "mixed_rel", {1: 1e-7, 3: 1e-7}))
    df = frame(_drift(1.0, 0.27), clean, loss("loss_clip", [LN_B] * N), moving())
    assert one(R.batch_of_copies(df, ctx()), "batch_of_copies").severity == "error"


def _grouped(loss_in: float, ln_g: float = math.log(32), inside: float = 0.94, n: int = N, every: int = 4):
    steps = range(0, n, every)
    return frame(*(rec("contrastive", "logits", m, {s: v for s in steps}) for m, v in (
        ("group_share", 0.47), ("group_mass", 0.98), ("target_in_group", inside), ("loss_in_group", loss_in),
        ("ln_group", ln_g))))


def test_target_only_in_group_fires_on_a_loss_that_learned_the_groups_and_nothing_inside_them():
    # a gather of [image; text] per rank split in halves: each row tells image-like from text-like columns (32 of
    # 64), and its target is another sample of its own kind, at chance among them (loss ~ ln 32 of ln 64)
    stuck_at = loss("loss_clip", noisy([math.log(32) + 0.05] * N))
    df = frame(_grouped(math.log(32) + 0.01), stuck_at, moving())
    f = one(R.target_only_in_group(df, ctx()), "target_only_in_group")
    assert f.severity == "error" and f.target == "logits"
    assert f.evidence["loss_in_group_end"] == pytest.approx(math.log(32) + 0.01, abs=1e-3)
    assert f.evidence["group_share_end"] == 0.47 and "gather" in f.next_step
    assert R.target_only_in_group.alarm(f, df)
    assert R.rank_root_causes([f.to_dict()], {"learned": False})[0]["cause"] == "wrong_targets"


def test_target_only_in_group_near_misses():
    stuck_at = loss("loss_clip", noisy([math.log(32) + 0.05] * N))
    # the target stands out inside its group (a model still learning its pairs): below the at-chance band
    assert R.target_only_in_group(frame(_grouped(0.9 * math.log(32)), stuck_at, moving()), ctx()) == []
    # the targets outside the rows' groups (nothing about the groups learned)
    assert R.target_only_in_group(frame(_grouped(math.log(32), inside=0.5), stuck_at, moving()), ctx()) == []
    # a learned run, and a run at chance
    for level in (0.4 * LN_B, LN_B):
        assert R.target_only_in_group(frame(_grouped(math.log(32)), loss("loss_clip", [level] * N), moving()),
                                      ctx()) == []
    # the group is the positive's own copies: masking them takes a tenth of the loss or more (false_negatives)
    copies = frame(rec("contrastive", "logits", "loss_duplicates_masked", {s: 2.0 for s in range(0, N, 4)}),
                   rec("contrastive", "logits", "loss_diagonal_same_step", {s: 3.5 for s in range(0, N, 4)}))
    assert R.target_only_in_group(frame(_grouped(math.log(32)), copies, stuck_at, moving()), ctx()) == []


def test_target_only_in_group_alarms_once_it_persisted_even_while_the_mass_moves_into_the_group():
    # the loss still falls (the rows put more of their mass on their group), the target at chance inside throughout
    falling = loss("loss_clip", [LN_B - 0.02 * s for s in range(N)])
    df = frame(_grouped(math.log(32)), falling, moving())
    f = one(R.target_only_in_group(df, ctx()), "target_only_in_group")
    assert R.target_only_in_group.alarm(f, df)
    # the weights barely moving (a short run at a small lr): the falling loss is the evidence of learning
    slow = frame(_grouped(math.log(32)), falling, moving(per_step=1e-4))
    assert R.target_only_in_group.alarm(one(R.target_only_in_group(slow, ctx()), "target_only_in_group"), slow)
    # near misses: fewer than PERSIST_MIN_OBS readings held (the trailing run starts late); neither the weights nor
    # the loss moving (nothing learned while it held)
    late = frame(_grouped(math.log(32), n=N, every=8), falling, moving())
    assert not R.target_only_in_group.alarm(one(R.target_only_in_group(late, ctx()), "target_only_in_group"), late)
    flat = loss("loss_clip", noisy([math.log(32) + 0.05] * N))
    still = frame(_grouped(math.log(32)), flat, moving(per_step=1e-4))
    assert not R.target_only_in_group.alarm(one(R.target_only_in_group(still, ctx()), "target_only_in_group"), still)
