"""The one registry of rules: one instance per rule, grouped by what `check` receives, and what the
root-cause ranking reads from it (`declarations`). Add a rule to its topic module and to `CATALOGUE`."""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from ..findings import Finding, sort_findings
from .attention import (
    AttentionEntropy,
    LatentScaleNormalised,
    LatentsNotMoving,
    LatentSymmetry,
    SamplesMixed,
    SoftmaxOverBatch,
)
from .barely_moved import WeightsBarelyMoved
from .base import Emit, Rule, RunContext
from .checkpoint import CheckpointChange, CheckpointLatents, CheckpointTemperature, ConfigMatch, NonfiniteWeights
from .contrastive import (
    BatchOfCopies,
    EmbeddingWithoutGradient,
    FalseNegatives,
    LogitsCandidates,
    SoftTargetsFlat,
    TargetsOffDiagonal,
)
from .data import NoDataSignal, PairsUnrelated
from .distributed import ChanceMismatch, GatheredGradientScale, GatheredWithoutGradient, ReplicasOutOfSync
from .forward_weights import StaleForwardWeights
from .frozen_group import FrozenInOptimizer
from .gradients import (
    GradientFall,
    GradientPresence,
    GradientScale,
    NonfiniteValues,
    ScaleUpdateHigh,
    UpdateRatioHigh,
    UpdateRatioLow,
    WeightsShrinking,
)
from .graph import ParamsUnregistered
from .group_targets import TargetOnlyInGroup
from .log_causes import LogLearningRateGone, LogLearningRateHigh, LogTemperature
from .logs import LogAtChance, LogIdentical, LogNonfinite, LogRecall, LogTrend, LogWeights
from .loss import FewNegatives, FlatLogits, LossAtChance, Temperature, TemperatureLimitsLoss
from .loss_logging import (
    IdenticalComponents,
    LoggedAggregate,
    LoggedNotTracking,
    LoggedScaled,
    LoggedTotal,
    LoggedTwoScales,
)
from .margin import FarShortOfMargin
from .optimizer import (
    DecayDominatesGradient,
    DecayShrinksWeights,
    EpsDominatesStep,
    LearningRateGone,
    LrBelowSchedulePeak,
    ParamsOutsideOptimizer,
    TemperatureDecayed,
    UpdatesRoundedAway,
)
from .outside_writes import ParamsWrittenOutside
from .own_shard import OwnShardGradient
from .representation import (
    ChanceNotCollapsed,
    CollapsedByUpdate,
    EmbeddingCollapse,
    EmbeddingsNotNormalised,
    InputSharedComponent,
)
from .zero_fixed_point import ZeroFixedPoint

# --- the catalogue: one instance per rule, grouped by what `check` receives ------------------------
loss_at_chance, few_negatives, temperature = LossAtChance(), FewNegatives(), Temperature()
gradient_presence, gradient_scale, gradient_fall = GradientPresence(), GradientScale(), GradientFall()
nonfinite_values, update_ratio = NonfiniteValues(), UpdateRatioHigh()
update_ratio_low, weights_shrinking = UpdateRatioLow(), WeightsShrinking()
embedding_collapse, input_shared_component = EmbeddingCollapse(), InputSharedComponent()
embeddings_not_normalised, chance_not_collapsed = EmbeddingsNotNormalised(), ChanceNotCollapsed()
attention_entropy, softmax_over_batch = AttentionEntropy(), SoftmaxOverBatch()
latent_symmetry, latents_not_moving = LatentSymmetry(), LatentsNotMoving()
latent_scale_normalised = LatentScaleNormalised()
logged_total, identical_components = LoggedTotal(), IdenticalComponents()
gathered_gradient_scale, replicas_out_of_sync = GatheredGradientScale(), ReplicasOutOfSync()
gathered_without_gradient = GatheredWithoutGradient()
chance_mismatch = ChanceMismatch()
no_data_signal, flat_logits, temperature_limits_loss = NoDataSignal(), FlatLogits(), TemperatureLimitsLoss()
# direct readings of the state the user hands over (optimizer, logits, targets, embeddings)
params_outside_optimizer, learning_rate_gone = ParamsOutsideOptimizer(), LearningRateGone()
logits_candidates, targets_off_diagonal = LogitsCandidates(), TargetsOffDiagonal()
false_negatives, embedding_without_gradient = FalseNegatives(), EmbeddingWithoutGradient()
scale_update_high, pairs_unrelated, logged_scaled = ScaleUpdateHigh(), PairsUnrelated(), LoggedScaled()
far_short_of_margin = FarShortOfMargin()
# a counterfactual on the step's own inputs: the batch cut in half
samples_mixed = SamplesMixed()
# the reported loss as an aggregate (running mean, moving average, micro-batch sum) of the logits' own
logged_aggregate = LoggedAggregate()
# the logged loss's trend against the logits' own cross-entropy (the logits learned, the log does not fall)
logged_not_tracking = LoggedNotTracking()
# the logged loss equal to the logits' own on some steps and several times it on others
logged_two_scales = LoggedTwoScales()
# float16 / bfloat16 weights the optimizer steps leave bit-identical
updates_rounded_away = UpdatesRoundedAway()
# an L2 decay term against the gradient it is added to; eps against the gradient scale it divides by
eps_dominates_step = EpsDominatesStep()
decay_dominates_gradient, temperature_decayed = DecayDominatesGradient(), TemperatureDecayed()
soft_targets_flat = SoftTargetsFlat()
# the loss's autograd graph: trainable leaves in no registered module and no param group
params_unregistered = ParamsUnregistered()
# the decay's own rate where the settings fix it; a schedule's peak (max_lr) against the lr it gives
decay_shrinks_weights, lr_below_schedule_peak = DecayShrinksWeights(), LrBelowSchedulePeak()
# spread-out embeddings collapsed at the next reading, an optimizer step between that rewrote the model
collapsed_by_update = CollapsedByUpdate()
# a batch's rows copies of one vector that changes from batch to batch: one item per batch, not a collapse
batch_of_copies = BatchOfCopies()
# the loss split at the group of candidates each row narrowed to: learned down to the group, at chance inside it
target_only_in_group = TargetOnlyInGroup()
# a layer's output against its input through its current weight: the forward reads a copy the optimizer left behind
forward_weights_stale = StaleForwardWeights()
# the weights at an observation against those the optimizer's last step left: a decay or a copy written by the script
params_written_outside = ParamsWrittenOutside()
# tensors of zeros whose gradients are exactly zero: factors that all start at zero never move
zero_fixed_point = ZeroFixedPoint()
# features gathered from the ranks, only this rank's shard differentiable, under SGD: the lr divided by the world size
gathered_own_shard_only = OwnShardGradient()
# the weights moved, summed over the run, by under 1% of their norm while the loss stayed: steps too small for the run
weights_barely_moved = WeightsBarelyMoved()
# tensors in the optimizer that were meant to train (their own group with an lr, or stepped before) and are frozen
frozen_in_optimizer = FrozenInOptimizer()

CATALOGUE: dict[str, tuple[Rule, ...]] = {
    # records of an instrumented run (reference runs, `diagnose.watch`, framework callbacks)
    "records": (loss_at_chance, embedding_collapse, input_shared_component, gradient_presence, gradient_scale,
                gradient_fall, nonfinite_values, update_ratio, attention_entropy, temperature, logged_total,
                identical_components, few_negatives, latent_symmetry, latents_not_moving, latent_scale_normalised,
                update_ratio_low, embeddings_not_normalised, weights_shrinking, chance_not_collapsed,
                softmax_over_batch,
                gathered_gradient_scale, replicas_out_of_sync, chance_mismatch, no_data_signal, flat_logits,
                temperature_limits_loss, params_outside_optimizer, learning_rate_gone, logits_candidates,
                targets_off_diagonal, false_negatives, embedding_without_gradient, scale_update_high, pairs_unrelated,
                logged_scaled, samples_mixed, logged_aggregate, logged_not_tracking, updates_rounded_away,
                decay_dominates_gradient, temperature_decayed, soft_targets_flat, decay_shrinks_weights,
                lr_below_schedule_peak, params_unregistered, gathered_without_gradient, eps_dominates_step,
                logged_two_scales, collapsed_by_update, batch_of_copies, target_only_in_group, forward_weights_stale,
                params_written_outside, zero_fixed_point, gathered_own_shard_only, weights_barely_moved,
                frozen_in_optimizer),
    # `diagnose checkpoint`: a CheckpointAnalysis
    "checkpoint": (NonfiniteWeights(), CheckpointLatents(), CheckpointTemperature(), CheckpointChange(), ConfigMatch()),
    # `diagnose logs`: one run's log frame; "log_set": every run of the log at once
    "logs": (LogAtChance(), LogTrend(), LogIdentical(), LogRecall(), LogNonfinite(), LogLearningRateHigh(),
             LogLearningRateGone(), LogTemperature()),
    "log_set": (LogWeights(),),
    # a run summary's end: the verdict's numbers (held-out retrieval is measured after the records)
    "verdict": (far_short_of_margin,),
}
RULES = CATALOGUE["records"]


@lru_cache(maxsize=1)
def declarations() -> dict[str, Emit]:
    """Finding id -> its declaration. One id means one condition: every rule emitting it declares it alike."""
    out: dict[str, Emit] = {}
    for rules in CATALOGUE.values():
        for rule in rules:
            for e in rule.emits:
                prev = out.setdefault(e.id, e)
                if (prev.cause, prev.tier) != (e.cause, e.tier):
                    raise AssertionError(f"{e.id} is declared with two root causes: {prev} vs {e}")
    return out


def run_rules(records: pd.DataFrame, ctx: RunContext, kind: str = "records") -> list[Finding]:
    """Every rule of `kind` on `records` (a records frame, a CheckpointAnalysis, a log frame); sorted findings."""
    findings: list[Finding] = []
    for rule in CATALOGUE[kind]:
        findings.extend(rule(records, ctx))
    return sort_findings(findings)


