"""The rule catalogue: every rule of the tool, declared in one place.

A rule is a small class (`base.Rule`) that declares the finding ids it can emit (severity, the root
cause each implicates and its directness tier), the records it reads and its thresholds, and checks
one thing. Rules are grouped by topic in this package; `CATALOGUE` below is the one registry: add a
rule to its topic module and to this list. Root-cause ranking (`ranking.py`) reads the
declarations, so there is no second table to keep in step.

    from diagnose.core.rules import run_rules, RunContext
    findings = run_rules(records, RunContext("my-run", batch_size=64))

Record rules run on the records so far (online, from `diagnose.watch`) exactly as on a saved run.
"""

from __future__ import annotations

from ..definitions import CHANCE_REL_TOL, END_FRAC, END_MIN_POINTS, HOLDS_LOSS_SHARE, LEARNED_RECALL_FACTOR
from ..findings import Finding
from .attention import (
    COLLAPSED_ENTROPY,
    LATENT_COSINE,
    LATENT_MIN_STEPS,
    LATENT_STILL,
    LATENT_SYMMETRIC_STD,
    MIX_REL,
    NORM_GAIN_REMOVES_SCALE,
    UNIFORM_ENTROPY,
)
from .base import Emit, Rule, RunContext, series, targets, window
from .catalogue import (  # the rule instances: `rules.loss_at_chance(records, ctx)`
    CATALOGUE,
    RULES,
    attention_entropy,
    batch_of_copies,
    chance_mismatch,
    chance_not_collapsed,
    collapsed_by_update,
    decay_dominates_gradient,
    decay_shrinks_weights,
    declarations,
    embedding_collapse,
    embedding_without_gradient,
    embeddings_not_normalised,
    eps_dominates_step,
    false_negatives,
    few_negatives,
    flat_logits,
    forward_weights_stale,
    frozen_in_optimizer,
    gathered_gradient_scale,
    gathered_own_shard_only,
    gathered_without_gradient,
    gradient_fall,
    gradient_presence,
    gradient_scale,
    identical_components,
    input_shared_component,
    latent_scale_normalised,
    latent_symmetry,
    latents_not_moving,
    learning_rate_gone,
    logged_aggregate,
    logged_not_tracking,
    logged_scaled,
    logged_total,
    logged_two_scales,
    logits_candidates,
    loss_at_chance,
    lr_below_schedule_peak,
    no_data_signal,
    nonfinite_values,
    pairs_unrelated,
    params_outside_optimizer,
    params_unregistered,
    params_written_outside,
    replicas_out_of_sync,
    run_rules,
    samples_mixed,
    scale_update_high,
    soft_targets_flat,
    softmax_over_batch,
    target_only_in_group,
    targets_off_diagonal,
    temperature,
    temperature_decayed,
    temperature_limits_loss,
    update_ratio,
    update_ratio_low,
    updates_rounded_away,
    weights_barely_moved,
    weights_shrinking,
    zero_fixed_point,
)
from .causes import BY_ID as CAUSES_BY_ID
from .causes import CAUSES, Cause
from .distributed import GRAD_COSINE_MIN, GRAD_SCALE_TOL, REPLICA_SPREAD_TOL
from .gradients import EXPLODING_REL, GRAD_FALL_RATIO, PARAM_SHRINK, UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW, VANISHING_REL
from .loss import (
    CLAMP_REL,
    FEW_NEGATIVES_ERROR,
    FEW_NEGATIVES_WARN,
    LOW_LOGIT_SCALE,
    MARGIN_USED,
    TEMPERATURE_HOLDS,
    TEMPERATURE_OFF_FACTOR,
)
from .loss_logging import IDENTICAL_ATOL, IDENTICAL_SHARE, LOGGING_REL_TOL
from .ranking import rank_root_causes
from .representation import (
    COLLAPSE_COSINE,
    NORMS_COST_SHARE,
    SHARED_INPUT_COSINE,
    SPREAD_EFFECTIVE_RANK,
    UNIT_NORM_TOL,
)

WINDOW_FRAC, WINDOW_MIN = END_FRAC, END_MIN_POINTS

__all__ = [
    "CATALOGUE", "CAUSES", "rank_root_causes", "CAUSES_BY_ID", "Cause", "Emit", "Finding", "RULES", "Rule",
    "RunContext", "declarations", "run_rules", "series", "targets", "window", "CHANCE_REL_TOL", "WINDOW_FRAC",
    "WINDOW_MIN", "COLLAPSED_ENTROPY", "LATENT_COSINE", "LATENT_MIN_STEPS", "LATENT_STILL", "LATENT_SYMMETRIC_STD",
    "NORM_GAIN_REMOVES_SCALE", "UNIFORM_ENTROPY", "EXPLODING_REL", "GRAD_FALL_RATIO", "PARAM_SHRINK",
    "UPDATE_RATIO_HIGH", "UPDATE_RATIO_LOW", "VANISHING_REL", "CLAMP_REL", "MARGIN_USED", "TEMPERATURE_OFF_FACTOR",
    "TEMPERATURE_HOLDS", "NORMS_COST_SHARE", "HOLDS_LOSS_SHARE",
    "FEW_NEGATIVES_ERROR", "FEW_NEGATIVES_WARN", "LOW_LOGIT_SCALE", "IDENTICAL_ATOL", "IDENTICAL_SHARE",
    "LOGGING_REL_TOL", "COLLAPSE_COSINE", "SHARED_INPUT_COSINE", "SPREAD_EFFECTIVE_RANK", "UNIT_NORM_TOL",
    "GRAD_COSINE_MIN", "GRAD_SCALE_TOL", "REPLICA_SPREAD_TOL", "LEARNED_RECALL_FACTOR", "loss_at_chance",
    "few_negatives", "temperature", "gradient_presence", "gradient_scale", "gradient_fall", "nonfinite_values",
    "update_ratio", "update_ratio_low", "weights_shrinking", "embedding_collapse", "input_shared_component",
    "embeddings_not_normalised", "chance_not_collapsed", "attention_entropy", "softmax_over_batch", "latent_symmetry",
    "latents_not_moving", "latent_scale_normalised", "logged_total", "identical_components",
    "gathered_gradient_scale", "replicas_out_of_sync", "chance_mismatch", "no_data_signal", "flat_logits",
    "temperature_limits_loss", "params_outside_optimizer", "learning_rate_gone", "logits_candidates",
    "targets_off_diagonal", "false_negatives", "embedding_without_gradient", "scale_update_high", "pairs_unrelated",
    "logged_scaled", "samples_mixed", "MIX_REL", "logged_aggregate", "logged_not_tracking", "logged_two_scales",
    "updates_rounded_away",
    "decay_dominates_gradient", "temperature_decayed", "soft_targets_flat", "decay_shrinks_weights",
    "lr_below_schedule_peak", "params_unregistered", "gathered_without_gradient", "eps_dominates_step",
    "collapsed_by_update", "batch_of_copies", "target_only_in_group", "forward_weights_stale",
    "params_written_outside", "zero_fixed_point", "gathered_own_shard_only", "weights_barely_moved",
    "frozen_in_optimizer",
]
