"""The rule catalogue: every rule and finding id is declared, registered once and covered; each finding
fires just past its threshold and stays quiet just short of it (the table below); rules are quiet on
empty records and `run_rules` sorts what they find."""

from __future__ import annotations

import inspect
import math

import pandas as pd
import pytest

from diagnose.core import rules as R
from diagnose.core.findings import severity_rank
from diagnose.core.rules.causes import BY_ID
from diagnose.core.rules.graph import UNMOVED_REL

from .harness import (
    BAR,
    CT,
    HEALTHY_LAYERS,
    LATENT,
    LN_B,
    TOL,
    TOP1_BAR,
    WIN,
    N,
    components,
    ctx,
    frame,
    ids,
    latents,
    layers,
    loss,
    model_grad,
    one,
    ranked,
    rec,
    sharpenable,
    tail,
)


# id -> list of (severity, rule, records, ctx) that must produce exactly that finding
def unit_rows(norm: float):
    return frame(rec("collapse", "image", "norm_mean", norm), rec("collapse", "text", "norm_mean", norm))


TRIGGERS = {
    "params_unregistered": [("error", R.params_unregistered,
                             frame(rec("graph_leaves", "unregistered", "count", {0: 4}),
                                   rec("graph_leaves", "unregistered", "norm",
                                       [3.0] * (N - 1) + [3.0 * (1 + 0.9 * UNMOVED_REL)]),
                                   loss("loss_clip", LN_B)), ctx())],
    "loss_at_chance": [("error", R.loss_at_chance, loss("loss_clip", tail(1.0, LN_B * (1 + 0.9 * TOL))), ctx()),
                       ("error", R.loss_at_chance, loss("loss_clip", LN_B * (1 - 0.9 * TOL)), ctx())],
    "loss_above_chance": [("error", R.loss_at_chance, loss("loss_clip", LN_B * (1 + 1.01 * TOL)), ctx())],
    "embedding_collapse": [("error", R.embedding_collapse,
                            rec("collapse", "text", "cosine_mean", tail(0.1, CT + 1e-3)), ctx())],
    "intermediate_collapse": [("warning", R.embedding_collapse,
                               rec("collapse", "vision.encoder.layers.3", "cosine_mean", tail(0.1, CT + 1e-3)), ctx())],
    "input_shared_component": [
        ("warning", R.input_shared_component, rec("collapse", "input", "cosine_mean", R.SHARED_INPUT_COSINE + 0.01),
         ctx()),
        ("warning", R.input_shared_component,
         frame(rec("collapse", "input", "cosine_mean", R.SHARED_INPUT_COSINE + 0.01),
                                                    loss("loss_clip", LN_B * (1 - 0.99 * TOL))), ctx()),
        ("info", R.input_shared_component, frame(rec("collapse", "input", "cosine_mean", R.SHARED_INPUT_COSINE + 0.01),
                                                 loss("loss_clip", LN_B * (1 - 1.01 * TOL))), ctx()),
    ],
    # inputs as collapsed as collapsed embeddings, an embedding collapsed from its first observation, at chance
    "input_collapses_embeddings": [("error", R.input_shared_component,
                                    frame(rec("collapse", "input", "cosine_mean", CT + 1e-3),
                                          rec("collapse", "image", "cosine_mean", CT + 1e-3), loss("loss_clip", LN_B)),
                                    ctx())],
    "no_gradient": [("error", R.gradient_presence, frame(rec("gradient_flow", "text.proj.weight", "grad_is_none", 1.0),
                                                        rec("gradient_flow", "image.proj.weight", "grad_norm", 1.0)),
                     ctx())],
    "dead_gradients": [("error", R.gradient_presence,
                        layers({**HEALTHY_LAYERS, "enc.layers.4": 0.0}, zero={"enc.layers.4": 1.0}), ctx())],
    "vanishing_gradients": [("warning", R.gradient_scale,
                             layers({**HEALTHY_LAYERS, "enc.layers.4": 0.5 * R.VANISHING_REL}), ctx())],
    "exploding_gradients": [("warning", R.gradient_scale,
                             layers({**HEALTHY_LAYERS, "enc.layers.4": 1.01 * R.EXPLODING_REL}), ctx())],
    "gradient_fall": [("warning", R.gradient_fall, model_grad(10.0, 10.0 * R.GRAD_FALL_RATIO * 0.5), ctx())],
    "nonfinite_values": [
        ("error", R.nonfinite_values, rec("gradient_flow.model", "model", "nonfinite_grad", {0: 0, 1: 0, 2: 7}), ctx()),
        ("error", R.nonfinite_values, rec("loss_split", "loss_clip", "nonfinite", {0: 0, 1: 1}), ctx()),
    ],
    "update_ratio_high": [("warning", R.update_ratio,
                           rec("gradient_flow.layer", "enc.layers.0", "update_to_param",
                               {0: 1e-3, 1: 1.01 * R.UPDATE_RATIO_HIGH}),
                           ctx())],
    "attention_uniform": [("warning", R.attention_entropy,
                           rec("softmax_entropy", "enc.attn", "entropy_mean", tail(0.5, R.UNIFORM_ENTROPY + 0.005)),
                           ctx())],
    "attention_entropy_collapse": [("warning", R.attention_entropy,
                                    rec("softmax_entropy", "enc.attn", "entropy_mean",
                                        tail(0.5, R.COLLAPSED_ENTROPY * 0.9)),
                                    ctx())],
    "temperature_at_clamp": [
        ("warning", R.temperature,
         rec("loss_split", "extras", "logit_scale", [14.29, 100.0 * (1 - 0.9 * R.CLAMP_REL)]), ctx()),
        ("warning", R.temperature, rec("loss_split", "extras", "logit_scale", [14.29, 50.0]),
         ctx(max_logit_scale=50.0)),
    ],
    "temperature_toward_1": [("warning", R.temperature,
                              rec("loss_split", "extras", "logit_scale", [14.29, 0.99 * R.LOW_LOGIT_SCALE]), ctx())],
    # a scale of 0.1 over 64 unit rows: the best loss any embeddings reach is 97.6% of ln(64), inside the chance band
    "scale_floors_loss": [("error", R.temperature, frame(rec("loss_split", "extras", "logit_scale", [0.07, 0.1]),
                                                         loss("loss_clip", LN_B), unit_rows(1.0)), ctx())],
    "loss_logging_inconsistent": [("error", R.logged_total,
                                   frame(rec("loss_split", "total", "value", 5.0),
                                         rec("loss_split", "total", "total_minus_weighted_sum",
                                             {s: 5.0 * 1.01 * R.LOGGING_REL_TOL * (s == 7) for s in range(N)})),
                                   ctx())],
    # the logits' own loss fell to just under the learned bar while the logged one stayed put
    "loss_logged_not_tracking": [("error", R.logged_not_tracking,
                                  frame(loss("loss_clip", 5.0),
                                        rec("contrastive", "logits", "loss_diagonal", tail(LN_B, 0.98 * BAR))), ctx())],
    "components_identical": [
        ("warning", R.identical_components, components(LN_B, LN_B + 0.9 * R.IDENTICAL_ATOL), ctx()),
        ("error", R.identical_components, components(2.0, 2.0 + 0.9 * R.IDENTICAL_ATOL), ctx()),
    ],
    "few_negatives": [("warning", R.few_negatives, frame(), ctx(batch_size=R.FEW_NEGATIVES_WARN)),
                      ("warning", R.few_negatives, frame(), ctx(batch_size=R.FEW_NEGATIVES_ERROR + 1)),
                      ("error", R.few_negatives, frame(), ctx(batch_size=R.FEW_NEGATIVES_ERROR))],
    "latents_symmetric": [("error", R.latent_symmetry, latents(identical_rows=[0.0] * (N - 1) + [3.0]), ctx()),
                          ("error", R.latent_symmetry, latents(between_latent_std=1e-9), ctx())],
    "latents_similar": [("warning", R.latent_symmetry,
                         latents(cosine_mean=[0.1] * (N - 1) + [R.LATENT_COSINE + 1e-3]), ctx())],
    "latents_not_moving": [("warning", R.latents_not_moving,
                            latents(drift=[0.0] * R.LATENT_MIN_STEPS + [0.99 * R.LATENT_STILL]), ctx())],
    "latent_scale_normalised": [("info", R.latent_scale_normalised,
                                 frame(latents(),
                                       rec("latent_stats", LATENT, "norm_gain", {0: 1.01 * R.NORM_GAIN_REMOVES_SCALE}),
                                       rec("latent_stats", LATENT, "post_norm_rms", {0: 1.0})), ctx())],
    "logits_flat": [("error", R.flat_logits, ranked(1.01 * TOP1_BAR), ctx()),
                    ("error", R.flat_logits, ranked(0.95, LN_B * (1 - 0.9 * TOL)), ctx())],
    "temperature_limits_loss": [
        ("error", R.temperature_limits_loss,
         sharpenable(1.01 * BAR, 0.99 * BAR, R.TEMPERATURE_OFF_FACTOR, R.MARGIN_USED + 0.01), ctx()),
        # the room above a negative cosine of 0.5 is 0.5: a positive at 0.76 uses just over half of it
        ("error", R.temperature_limits_loss, sharpenable(1.3 * BAR, 0.6 * BAR, 4.0, 0.76, 0.5), ctx()),
        # a scale that started too small and grew a little (transformers#13430's init of 1 in log space)
        ("error", R.temperature_limits_loss, frame(sharpenable(1.3 * BAR, 0.6 * BAR, 4.0, 0.9),
                                                   rec("loss_split", "extras", "logit_scale", tail(2.72, 2.87))),
         ctx()),
        # crossed the learned bar, yet the temperature holds the loss TEMPERATURE_HOLDS x ln B above the ranking's
        ("error", R.temperature_limits_loss,
         sharpenable(0.95 * BAR, 0.95 * BAR - 1.01 * R.TEMPERATURE_HOLDS * LN_B, 8.0, 0.9), ctx()),
    ],
}


# id -> list of (rule, records, ctx): just on the healthy side of the threshold, so that id must not appear
NEAR_MISSES = {
    "params_unregistered": [(R.params_unregistered,  # a second optimizer moves them
                             frame(rec("graph_leaves", "unregistered", "count", {0: 4}),
                                   rec("graph_leaves", "unregistered", "norm",
                                       [3.0] * (N - 1) + [3.0 * (1 + 1.1 * UNMOVED_REL)]),
                                   loss("loss_clip", LN_B)), ctx()),
                            (R.params_unregistered, frame(rec("graph_leaves", "unregistered", "count", {0: 0}),
                                                          loss("loss_clip", LN_B)), ctx())],
    "loss_at_chance": [(R.loss_at_chance, loss("loss_clip", LN_B * (1 - 1.01 * TOL)), ctx()),
                       # at chance early, learned by the end of the run: only the window counts
                       (R.loss_at_chance, loss("loss_clip", tail(LN_B, LN_B * (1 - 2 * TOL))), ctx()),
                       (R.loss_at_chance, loss("loss_clip", float("nan")), ctx())],
    "loss_above_chance": [(R.loss_at_chance, loss("loss_clip", LN_B * (1 + 0.99 * TOL)), ctx()),
                          (R.loss_at_chance, loss("loss_clip", tail(2 * LN_B, LN_B * (1 - 2 * TOL))), ctx())],
    "embedding_collapse": [(R.embedding_collapse, rec("collapse", "text", "cosine_mean", tail(0.1, CT - 1e-3)), ctx()),
                           (R.embedding_collapse, rec("collapse", "image", "cosine_mean", tail(0.99, 0.2)), ctx()),
                           # a collapsed input is the input_shared_component rule's business, not a collapse
                           (R.embedding_collapse, rec("collapse", "input", "cosine_mean", 0.99), ctx())],
    "intermediate_collapse": [(R.embedding_collapse,
                               rec("collapse", "vision.encoder.layers.3", "cosine_mean", tail(0.1, CT - 1e-3)), ctx()),
                              (R.embedding_collapse, rec("collapse", "input", "cosine_mean", 0.99), ctx())],
    "input_shared_component": [(R.input_shared_component,
                                rec("collapse", "input", "cosine_mean", R.SHARED_INPUT_COSINE - 0.01), ctx())],
    "input_collapses_embeddings": [
        # inputs short of the collapse bar; an embedding that was spread at its first observation (a contraction
        # during training); the same state in a run that left chance (a slow healthy start that learned)
        (R.input_shared_component, frame(rec("collapse", "input", "cosine_mean", CT - 1e-3),
                                         rec("collapse", "image", "cosine_mean", CT + 1e-3), loss("loss_clip", LN_B)),
         ctx()),
        (R.input_shared_component, frame(rec("collapse", "input", "cosine_mean", CT + 1e-3),
                                         rec("collapse", "image", "cosine_mean", [CT - 1e-3] + [0.999] * (N - 1)),
                                         loss("loss_clip", LN_B)), ctx()),
        (R.input_shared_component, frame(rec("collapse", "input", "cosine_mean", CT + 1e-3),
                                         rec("collapse", "image", "cosine_mean", CT + 1e-3),
                                         loss("loss_clip", LN_B * (1 - 1.01 * TOL))), ctx()),
    ],
    "no_gradient": [(R.gradient_presence, rec("gradient_flow", "text.proj.weight", "grad_is_none", 0.0), ctx()),
                    # the one step without it is a step on which no parameter held a gradient (observe() before the
                    # first backward), and the parameter held one on every other
                    (R.gradient_presence, frame(rec("gradient_flow", "text.proj.weight", "grad_is_none", {0: 1.0}),
                                                rec("gradient_flow", "text.proj.weight", "grad_norm",
                                                    {s: 1.0 for s in range(1, N)})), ctx())],
    "dead_gradients": [
        # exactly zero on all but one window step
        (R.gradient_presence,
         frame(layers(HEALTHY_LAYERS), rec("gradient_flow.layer", "enc.layers.4", "grad_norm", 0.5),
                                  rec("gradient_flow.layer", "enc.layers.4", "zero_grad_frac",
                                      [1.0] * (N - 1) + [0.999])),
         ctx()),
        # dead early, alive in the window
        (R.gradient_presence,
         frame(layers(HEALTHY_LAYERS), rec("gradient_flow.layer", "enc.layers.4", "grad_norm", 0.5),
                                  rec("gradient_flow.layer", "enc.layers.4", "zero_grad_frac", tail(1.0, 0.2))), ctx()),
    ],
    "vanishing_gradients": [(R.gradient_scale, layers({**HEALTHY_LAYERS, "enc.layers.4": 1.01 * R.VANISHING_REL}),
                             ctx()),
                            # a dead layer is reported as dead, not also as vanishing
                            (R.gradient_scale,
                             layers({**HEALTHY_LAYERS, "enc.layers.4": 0.0}, zero={"enc.layers.4": 1.0}),
                             ctx())],
    "exploding_gradients": [(R.gradient_scale, layers({**HEALTHY_LAYERS, "enc.layers.4": 0.99 * R.EXPLODING_REL}),
                             ctx())],
    "gradient_fall": [(R.gradient_fall, model_grad(10.0, 10.0 * R.GRAD_FALL_RATIO * 1.01), ctx()),
                      # the gradient fell because the loss went down: converging, not saturated
                      (R.gradient_fall,
                       model_grad(10.0, 10.0 * R.GRAD_FALL_RATIO * 0.5, loss_end=LN_B * (1 - 1.01 * TOL)),
                       ctx()),
                      # too few steps to tell an early peak from an end
                      (R.gradient_fall, rec("gradient_flow.model", "model", "grad_norm", [10.0] * R.WINDOW_MIN
                                              + [1e-6] * (R.WINDOW_MIN - 1)), ctx())],
    "nonfinite_values": [(R.nonfinite_values, frame(rec("gradient_flow.model", "model", "nonfinite_grad", 0.0),
                                                    rec("loss_split", "loss_clip", "nonfinite", 0.0)), ctx())],
    "update_ratio_high": [(R.update_ratio, rec("gradient_flow.layer", "enc.layers.0", "update_to_param",
                                               {0: 1e-3, 1: R.UPDATE_RATIO_HIGH}), ctx())],
    "attention_uniform": [(R.attention_entropy,
                           rec("softmax_entropy", "enc.attn", "entropy_mean", tail(0.99, R.UNIFORM_ENTROPY - 0.005)),
                           ctx()),
                          # contrastive logits and per-head rows are not attention modules
                          (R.attention_entropy, frame(rec("softmax_entropy", "logits.clip", "entropy_mean", 1.0),
                                                      rec("softmax_entropy", "enc.attn.head0", "entropy_mean", 1.0)),
                           ctx())],
    "attention_entropy_collapse": [(R.attention_entropy, rec("softmax_entropy", "enc.attn", "entropy_mean",
                                                             tail(0.01, R.COLLAPSED_ENTROPY * 1.1)), ctx()),
                                   (R.attention_entropy,
                                    frame(rec("softmax_entropy", "logits.clip", "entropy_mean", 0.0),
                                                               rec("softmax_entropy", "enc.attn.head3",
                                                                   "entropy_mean", 0.0)),
                                    ctx())],
    "temperature_at_clamp": [(R.temperature, rec("loss_split", "extras", "logit_scale",
                                                 [100.0, 100.0 * (1 - 1.01 * R.CLAMP_REL)]), ctx())],
    "temperature_toward_1": [(R.temperature,
                              rec("loss_split", "extras", "logit_scale", [0.5, 1.01 * R.LOW_LOGIT_SCALE]),
                              ctx())],
    # at 0.15 the floor is 96.4% of ln(64): the loss could leave the band; at 0.07 over rows of norm 1.5 it is not bound
    "scale_floors_loss": [(R.temperature, frame(rec("loss_split", "extras", "logit_scale", [0.07, 0.15]),
                                                loss("loss_clip", LN_B), unit_rows(1.0)), ctx()),
                          (R.temperature, frame(rec("loss_split", "extras", "logit_scale", [0.07, 0.07]),
                                                loss("loss_clip", LN_B), unit_rows(1.5)), ctx()),
                          # driven down from 14.3 by training (too high an lr): a symptom, the warning only
                          (R.temperature, frame(rec("loss_split", "extras", "logit_scale", [14.3, 0.1]),
                                                loss("loss_clip", LN_B), unit_rows(1.0)), ctx())],
    "loss_logging_inconsistent": [(R.logged_total, frame(rec("loss_split", "total", "value", 5.0),
                                                         rec("loss_split", "total", "total_minus_weighted_sum",
                                                             5.0 * 0.99 * R.LOGGING_REL_TOL)), ctx())],
    # the same fall, ending just above the learned bar: not learned, nothing says the log is the wrong one
    "loss_logged_not_tracking": [(R.logged_not_tracking,
                                  frame(loss("loss_clip", 5.0),
                                        rec("contrastive", "logits", "loss_diagonal", tail(LN_B, 1.02 * BAR))), ctx())],
    "components_identical": [
        (R.identical_components, components(2.0, 2.0 + 1.1 * R.IDENTICAL_ATOL), ctx()),
        # identical on 4 of the 5 window steps: under IDENTICAL_SHARE
        (R.identical_components, components(2.0, [2.1] * (N - WIN) + [2.0] * (WIN - 1) + [2.1]), ctx()),
        # the logged total of a single-component objective equals that component
        (R.identical_components, frame(loss("loss_clip", 2.0), rec("loss_split", "total", "value", 2.0),
                               rec("loss_split", "total", "total_minus_weighted_sum", 0.0)), ctx()),
    ],
    "few_negatives": [(R.few_negatives, frame(), ctx(batch_size=R.FEW_NEGATIVES_WARN + 1))],
    "latents_symmetric": [(R.latent_symmetry,
                           latents(identical_rows=[3.0] * (N - 1) + [0.0], between_latent_std=1e-7), ctx())],
    "latents_similar": [(R.latent_symmetry, latents(cosine_mean=[0.999] * (N - 1) + [R.LATENT_COSINE - 1e-3]), ctx())],
    "latents_not_moving": [(R.latents_not_moving, latents(drift=[0.0] * R.LATENT_MIN_STEPS + [1.01 * R.LATENT_STILL]),
                            ctx()),
                           # still, but too early to say it is not trained
                           (R.latents_not_moving, latents(drift=[0.0] * R.LATENT_MIN_STEPS), ctx())],
    "logits_flat": [(R.flat_logits, ranked(0.99 * TOP1_BAR), ctx()),  # ranking not (yet) learned
                    (R.flat_logits, ranked(0.95, LN_B * (1 - 1.01 * TOL)), ctx()),  # the loss left chance: not flat
                    (R.flat_logits, loss("loss_clip", LN_B), ctx()),  # no logits recorded
                    # the rows of a tower coincide (a norm whose gain starts at 0): flat because the rows are
                    (R.flat_logits, frame(ranked(0.95), rec("collapse", "text", "cosine_mean", 0.996)), ctx())],
    "temperature_limits_loss": [
        # learned as given, the temperature holding less than TEMPERATURE_HOLDS x ln B (a learned scale's lag)
        (R.temperature_limits_loss,
         sharpenable(0.95 * BAR, 0.95 * BAR - 0.99 * R.TEMPERATURE_HOLDS * LN_B, 8.0, 0.9), ctx()),
        # sharper logits would not reach the learned bar either: the ranking itself is short
        (R.temperature_limits_loss, sharpenable(1.5 * BAR, 1.01 * BAR, 4.0, 0.9), ctx()),
        # the best temperature is within the lag of a learned scale (grid optimum below 2x)
        (R.temperature_limits_loss, sharpenable(1.01 * BAR, 0.9 * BAR, 0.99 * R.TEMPERATURE_OFF_FACTOR, 0.9), ctx()),
        # the embeddings still have most of their cosine margin to win
        (R.temperature_limits_loss, sharpenable(1.3 * BAR, 0.6 * BAR, 4.0, R.MARGIN_USED - 0.01), ctx()),
        # at ln(B) itself: logits_flat's condition
        (R.temperature_limits_loss, sharpenable(LN_B, 0.6 * BAR, 4.0, 0.9), ctx()),
        # the logged scale started sharp and fell 2x during the run: the optimizer drove it down
        (R.temperature_limits_loss, frame(sharpenable(1.3 * BAR, 0.6 * BAR, 4.0, 0.9),
                                          rec("loss_split", "extras", "logit_scale",
                                              tail(14.3, 14.3 / R.TEMPERATURE_OFF_FACTOR))),
         ctx()),
        # no pair cosines recorded: the margin cannot be judged
        (R.temperature_limits_loss, sharpenable(1.3 * BAR, 0.6 * BAR, 4.0, 0.9).query("probe != 'collapse'"), ctx()),
    ],
    "latent_scale_normalised": [(R.latent_scale_normalised, frame(latents(), rec("latent_stats", LATENT, "norm_gain",
                                                                        {0: 0.99 * R.NORM_GAIN_REMOVES_SCALE,
                                                                         5: 1e3})), ctx())],
}


ALL_IDS = {
    "loss_at_chance", "loss_above_chance", "embedding_collapse", "intermediate_collapse", "input_shared_component",
    "input_collapses_embeddings",
    "no_gradient", "dead_gradients", "vanishing_gradients", "exploding_gradients", "gradient_fall", "nonfinite_values",
    "update_ratio_high", "attention_uniform", "attention_entropy_collapse", "temperature_at_clamp",
    "temperature_toward_1", "loss_logging_inconsistent", "components_identical", "few_negatives", "latents_symmetric",
    "latents_similar", "latents_not_moving", "latent_scale_normalised", "logits_flat", "temperature_limits_loss",
    "loss_logged_not_tracking",
    "params_unregistered", "scale_floors_loss",
}


def _cases(table):
    return [pytest.param(fid, *case, id=f"{fid}-{i}") for fid, cases in table.items() for i, case in enumerate(cases)]


# rules with their own triggering / quiet record sets in test_rules_extra.py
EXTRA_RULES = {R.update_ratio_low, R.embeddings_not_normalised, R.weights_shrinking, R.chance_not_collapsed,
               R.softmax_over_batch,
               # triggering and quiet cases in tests/distributed/test_rules_distributed.py
               R.gathered_gradient_scale, R.replicas_out_of_sync, R.chance_mismatch, R.gathered_without_gradient,
               # triggering (error, warning) and quiet cases in tests/engine/test_datasignal.py and
               # tests/core/rules/test_data.py
               R.no_data_signal,
               # direct readings: triggering and near-miss cases in tests/core/rules/test_persistence.py
               R.params_outside_optimizer, R.learning_rate_gone, R.logits_candidates, R.targets_off_diagonal,
               R.false_negatives, R.embedding_without_gradient, R.scale_update_high,
               # tests/core/rules/test_optimizer.py
               R.updates_rounded_away, R.decay_dominates_gradient, R.temperature_decayed, R.decay_shrinks_weights,
               R.lr_below_schedule_peak, R.eps_dominates_step,
               # tests/core/rules/test_contrastive.py
               R.soft_targets_flat, R.batch_of_copies, R.target_only_in_group,
               # tests/core/rules/test_representation.py
               R.collapsed_by_update,
               # tests/core/rules/test_forward_weights.py
               R.forward_weights_stale,
               # tests/core/rules/test_outside_writes.py
               R.params_written_outside,
               # tests/core/rules/test_zero_fixed_point.py
               R.zero_fixed_point,
               # tests/core/rules/test_own_shard.py
               R.gathered_own_shard_only,
               # tests/core/rules/test_gradients.py (the sum of the run's steps)
               R.weights_barely_moved,
               # tests/core/rules/test_frozen_group.py
               R.frozen_in_optimizer,
               # a counterfactual on the step's embeddings: firing and near misses in tests/core/rules/test_data.py
               R.pairs_unrelated,
               # the reported loss against the observed logits' own: tests/core/rules/test_loss_logging.py
               R.logged_scaled, R.logged_aggregate, R.logged_two_scales,
               # a counterfactual on the step's inputs (half a batch): tests/core/rules/test_attention.py
               R.samples_mixed}


def test_every_rule_and_finding_id_is_covered():
    assert set(TRIGGERS) == ALL_IDS == set(NEAR_MISSES)
    assert {case[1] for cases in TRIGGERS.values() for case in cases} | EXTRA_RULES == set(R.RULES)
    assert {case[0] for cases in NEAR_MISSES.values() for case in cases} | EXTRA_RULES == set(R.RULES)
    # both severities of the findings that have two
    two = {"input_shared_component": {"info", "warning"}, "components_identical": {"warning", "error"},
           "few_negatives": {"warning", "error"}}
    for fid, severities in two.items():
        assert {case[0] for case in TRIGGERS[fid]} == severities, fid


@pytest.mark.parametrize("fid, severity, rule, df, context", _cases(TRIGGERS))
def test_rule_fires_past_threshold(fid, severity, rule, df, context):
    findings = rule(df, context)
    f = one(findings, fid)
    assert f.severity == severity
    assert f.run == context.name
    assert f.message and f.evidence


@pytest.mark.parametrize("fid, rule, df, context", _cases(NEAR_MISSES))
def test_rule_quiet_on_healthy_side(fid, rule, df, context):
    assert fid not in ids(rule(df, context))


@pytest.mark.parametrize("rule", R.RULES, ids=lambda r: r.name)
def test_rules_quiet_on_empty_records(rule):
    assert rule(frame(), ctx()) == []


def test_rules_do_not_fire_on_an_empty_record_set():
    for rule in (R.update_ratio_low, R.embeddings_not_normalised, R.weights_shrinking, R.chance_not_collapsed,
                 R.softmax_over_batch):
        assert rule(frame(), ctx()) == [], rule.__name__
    assert math.isfinite(LN_B)


def test_run_rules_sorted_most_severe_first():
    df = frame(
        rec("loss_split", "extras", "logit_scale", [14.0, 1.0]),  # warning
        latents(), rec("latent_stats", LATENT, "norm_gain", {0: 50.0}),  # info
        loss("loss_clip", LN_B),  # error
        rec("collapse", "text", "cosine_mean", 0.99),  # error
        rec("collapse", "proj", "cosine_mean", 0.99),  # warning
    )
    found = R.run_rules(df, ctx(batch_size=8))  # few_negatives: warning
    assert {"loss_at_chance", "embedding_collapse", "temperature_toward_1", "intermediate_collapse", "few_negatives",
            "latent_scale_normalised"} <= set(ids(found))
    ranks = [severity_rank(f.severity) for f in found]
    assert ranks == sorted(ranks, reverse=True)
    assert found[0].severity == "error" and found[-1].severity == "info"


def test_run_rules_healthy_run_has_no_findings():
    learned = LN_B * 0.5
    df = frame(
        loss("loss_clip", tail(LN_B, learned)), loss("loss_mrl", tail(LN_B, learned + 0.3)),
        rec("loss_split", "total", "value", 2 * learned), rec("loss_split", "total", "total_minus_weighted_sum", 0.0),
        rec("loss_split", "extras", "logit_scale", [14.3, 20.0]),
        rec("collapse", "image", "cosine_mean", 0.1), rec("collapse", "text", "cosine_mean", 0.2),
        rec("collapse", "input", "cosine_mean", 0.2), rec("collapse", "proj", "cosine_mean", 0.3),
        layers(HEALTHY_LAYERS), rec("gradient_flow.model", "model", "grad_norm", tail(5.0, 1.0)),
        rec("gradient_flow.model", "model", "nonfinite_grad", 0.0), rec("gradient_flow", "w", "grad_is_none", 0.0),
        rec("gradient_flow.layer", "enc.layers.0", "update_to_param", 1e-3),
        rec("softmax_entropy", "enc.attn", "entropy_mean", 0.6), latents(),
    )
    assert R.run_rules(df, ctx()) == []


def test_every_rule_is_declared_and_registered_once():
    seen = [rule for rules in R.CATALOGUE.values() for rule in rules]
    assert len({type(r) for r in seen}) == len(seen)
    declared = R.declarations()
    for rule in seen:
        assert rule.topic and rule.emits, rule.name
        module = inspect.getmodule(type(rule))
        for name, value in rule.thresholds.items():  # thresholds are the module's named constants
            assert getattr(module, name, None) == value or getattr(R, name, None) == value, (rule.name, name)
        for e in rule.emits:
            assert declared[e.id].cause == e.cause
            assert e.cause is None or e.cause in BY_ID, e


def test_undeclared_finding_is_refused():
    class Rogue(R.Rule):
        emits = (R.Emit("x", ("warning",)),)

        def check(self, df, ctx):
            return [R.Finding("y", "warning", ctx.name, "m", {})]

    with pytest.raises(AssertionError):
        Rogue()(pd.DataFrame(), R.RunContext("r"))
