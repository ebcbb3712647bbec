"""The rule catalogue: every rule of the tool, declared in one place.

A rule is a small class (`base.Rule`) that declares the finding ids it can emit (severity, the root
cause each implicates and its directness tier), the records it reads and its thresholds, and checks
one thing. Rules are grouped by topic in this package; `CATALOGUE` below is the one registry: add a
rule to its topic module and to this list. Root-cause ranking (`ranking.py`) reads the
declarations, so there is no second table to keep in step.

    from diagnose.rules import run_rules, RunContext
    findings = run_rules(records, RunContext("my-run", batch_size=64))

Record rules run on the records so far (online, from `diagnose.watch`) exactly as on a saved run.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from ..definitions import CHANCE_REL_TOL, END_FRAC, END_MIN_POINTS, LEARNED_RECALL_FACTOR
from ..findings import Finding, sort_findings
from .attention import (
    COLLAPSED_ENTROPY, LATENT_COSINE, LATENT_MIN_STEPS, LATENT_STILL, LATENT_SYMMETRIC_STD, NORM_GAIN_REMOVES_SCALE,
    UNIFORM_ENTROPY, AttentionEntropy, LatentScaleNormalised, LatentsNotMoving, LatentSymmetry, SoftmaxOverBatch,
)
from .base import Emit, Rule, RunContext, series, targets, window
from .causes import BY_ID as CAUSES_BY_ID
from .causes import CAUSES, Cause
from .distributed import (
    GRAD_COSINE_MIN, GRAD_SCALE_TOL, REPLICA_SPREAD_TOL, ChanceMismatch, GatheredGradientScale, ReplicasOutOfSync,
)
from .data import NoDataSignal
from .checkpoint import CheckpointChange, CheckpointLatents, CheckpointTemperature, ConfigMatch, NonfiniteWeights
from .gradients import (
    EXPLODING_REL, GRAD_FALL_RATIO, PARAM_SHRINK, UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW, VANISHING_REL, GradientFall,
    GradientPresence, GradientScale, NonfiniteValues, UpdateRatioHigh, UpdateRatioLow, WeightsShrinking,
)
from .ranking import rank_root_causes
from .logs import LogAtChance, LogIdentical, LogNonfinite, LogRecall, LogTrend, LogWeights
from .loss import (
    CLAMP_REL, FEW_NEGATIVES_ERROR, FEW_NEGATIVES_WARN, LOW_LOGIT_SCALE, MARGIN_USED, TEMPERATURE_OFF_FACTOR, FewNegatives,
    FlatLogits, LossAtChance, Temperature, TemperatureLimitsLoss,
)
from .loss_logging import IDENTICAL_ATOL, IDENTICAL_SHARE, LOGGING_REL_TOL, IdenticalComponents, LoggedTotal
from .representation import (
    COLLAPSE_COSINE, SHARED_INPUT_COSINE, SPREAD_EFFECTIVE_RANK, UNIT_NORM_TOL, ChanceNotCollapsed, EmbeddingCollapse,
    EmbeddingsNotNormalised, InputSharedComponent,
)

WINDOW_FRAC, WINDOW_MIN = END_FRAC, END_MIN_POINTS

# --- the catalogue: one instance per rule, grouped by what `check` receives ------------------------
loss_at_chance, few_negatives, temperature = LossAtChance(), FewNegatives(), Temperature()
gradient_presence, gradient_scale, gradient_fall = GradientPresence(), GradientScale(), GradientFall()
nonfinite_values, update_ratio, update_ratio_low, weights_shrinking = NonfiniteValues(), UpdateRatioHigh(), UpdateRatioLow(), WeightsShrinking()
embedding_collapse, input_shared_component = EmbeddingCollapse(), InputSharedComponent()
embeddings_not_normalised, chance_not_collapsed = EmbeddingsNotNormalised(), ChanceNotCollapsed()
attention_entropy, softmax_over_batch = AttentionEntropy(), SoftmaxOverBatch()
latent_symmetry, latents_not_moving, latent_scale_normalised = LatentSymmetry(), LatentsNotMoving(), LatentScaleNormalised()
logged_total, identical_components = LoggedTotal(), IdenticalComponents()
gathered_gradient_scale, replicas_out_of_sync, chance_mismatch = GatheredGradientScale(), ReplicasOutOfSync(), ChanceMismatch()
no_data_signal, flat_logits, temperature_limits_loss = NoDataSignal(), FlatLogits(), TemperatureLimitsLoss()

CATALOGUE: dict[str, tuple[Rule, ...]] = {
    # records of an instrumented run (reference runs, `diagnose.watch`, framework callbacks)
    "records": (loss_at_chance, embedding_collapse, input_shared_component, gradient_presence, gradient_scale,
                gradient_fall, nonfinite_values, update_ratio, attention_entropy, temperature, logged_total,
                identical_components, few_negatives, latent_symmetry, latents_not_moving, latent_scale_normalised,
                update_ratio_low, embeddings_not_normalised, weights_shrinking, chance_not_collapsed, softmax_over_batch,
                gathered_gradient_scale, replicas_out_of_sync, chance_mismatch, no_data_signal, flat_logits,
                temperature_limits_loss),
    # `diagnose checkpoint`: a CheckpointAnalysis
    "checkpoint": (NonfiniteWeights(), CheckpointLatents(), CheckpointTemperature(), CheckpointChange(), ConfigMatch()),
    # `diagnose logs`: one run's log frame; "log_set": every run of the log at once
    "logs": (LogAtChance(), LogTrend(), LogIdentical(), LogRecall(), LogNonfinite()),
    "log_set": (LogWeights(),),
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


__all__ = [
    "CATALOGUE", "CAUSES", "rank_root_causes", "CAUSES_BY_ID", "Cause", "Emit", "Finding", "RULES", "Rule", "RunContext", "declarations",
    "run_rules", "series", "targets", "window", "CHANCE_REL_TOL", "WINDOW_FRAC", "WINDOW_MIN", "COLLAPSED_ENTROPY",
    "LATENT_COSINE", "LATENT_MIN_STEPS", "LATENT_STILL", "LATENT_SYMMETRIC_STD", "NORM_GAIN_REMOVES_SCALE",
    "UNIFORM_ENTROPY", "EXPLODING_REL", "GRAD_FALL_RATIO", "PARAM_SHRINK", "UPDATE_RATIO_HIGH", "UPDATE_RATIO_LOW",
    "VANISHING_REL", "CLAMP_REL", "MARGIN_USED", "TEMPERATURE_OFF_FACTOR", "FEW_NEGATIVES_ERROR", "FEW_NEGATIVES_WARN", "LOW_LOGIT_SCALE", "IDENTICAL_ATOL",
    "IDENTICAL_SHARE", "LOGGING_REL_TOL", "COLLAPSE_COSINE", "SHARED_INPUT_COSINE", "SPREAD_EFFECTIVE_RANK",
    "UNIT_NORM_TOL", "GRAD_COSINE_MIN", "GRAD_SCALE_TOL", "REPLICA_SPREAD_TOL", "LEARNED_RECALL_FACTOR",
]
