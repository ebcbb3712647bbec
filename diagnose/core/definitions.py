"""The three words every report uses, defined once: "end of run", "at chance", "learned".

Everything that judges a run (rules, verdicts, run summaries, hypotheses, log diagnosis) imports
them from here, so a report's "at chance" is the rules' "at chance".
"""

from __future__ import annotations

import math
from typing import Sequence

# Symmetric InfoNCE at uniform logits is exactly ln(B). At random init both reference models sit
# within ~1.5% of ln(B) (measured: 4.895 vs 4.852, 4.173 vs 4.159), and a model that ranks positives
# even slightly better than chance leaves that band within tens of steps; 3% separates the two.
CHANCE_REL_TOL = 0.03
# "The end of the run": the last 20% of the steps observed so far, and at least 5 observations, so a
# mean over it is not one noisy batch. Online, "so far" is the steps seen up to now.
END_FRAC, END_MIN_POINTS = 0.2, 5
# "Learned": the final CLIP loss is below half of ln(B) (the positive gets e^{-0.5 ln B} = 1/sqrt(B)
# of the probability mass on average, far beyond guessing) and, when held-out retrieval was measured,
# R@1 is at least 10x chance (K/N).
LEARNED_LOSS_FRACTION, LEARNED_RECALL_FACTOR = 0.5, 10.0
# "Holds the loss": a counterfactual on the step's own tensors (the duplicates masked out of the negatives,
# the embeddings as cosines) removes at least half of the loss on the same logits. Then the cause holds most
# of what is left, whether the run crossed the learned bar or not, and it is an error under either verdict
# (a learned run is headed "learned, but ..."). The healthy runs of benchmarks/real_faults/healthy.py read
# at most 0.05 on the duplicates' counterfactual.
HOLDS_LOSS_SHARE = 0.5


def end_start(steps: Sequence[int]) -> int:
    """Index of the first observation of the end-of-run window of sorted `steps`."""
    n = len(steps)
    if n == 0:
        return 0
    first, last = int(steps[0]), int(steps[-1])
    span = last - first + 1
    cut = last - math.ceil(span * END_FRAC) + 1  # steps >= cut are the last 20% of the step range
    idx = next((i for i, s in enumerate(steps) if int(s) >= cut), n - 1)
    return max(0, min(idx, n - END_MIN_POINTS))


def relative_gap(loss: float, chance: float) -> float:
    """(loss - ln B) / ln B; NaN when either is not finite."""
    if loss is None or chance is None or not (math.isfinite(loss) and math.isfinite(chance)) or chance == 0:
        return float("nan")
    return (loss - chance) / chance


def at_chance(loss: float, chance: float) -> bool:
    """Within CHANCE_REL_TOL of ln(B), on either side."""
    gap = relative_gap(loss, chance)
    return math.isfinite(gap) and abs(gap) < CHANCE_REL_TOL


def left_chance(loss: float, chance: float) -> bool:
    """Below the at-chance band: the model ranks positives better than guessing (a lower bar than `learned`)."""
    gap = relative_gap(loss, chance)
    return math.isfinite(gap) and gap <= -CHANCE_REL_TOL


def learned(loss: float, chance: float, r1: float | None = None, chance_r1: float | None = None) -> bool:
    """Final CLIP loss < LEARNED_LOSS_FRACTION x ln(B) and, when retrieval was measured, R@1 >= 10x chance."""
    if loss is None or chance is None or not (math.isfinite(loss) and math.isfinite(chance)):
        return False
    if loss >= LEARNED_LOSS_FRACTION * chance:
        return False
    if r1 is None or chance_r1 is None:
        return True
    return math.isfinite(r1) and r1 >= LEARNED_RECALL_FACTOR * chance_r1
