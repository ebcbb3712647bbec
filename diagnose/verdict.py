"""Per-run verdict: learned, at chance, above chance, partly learned, diverged; with its numbers."""

from __future__ import annotations

import math

from .rules import CHANCE_REL_TOL

# "learned": the final CLIP loss is below half of ln(B) and held-out R@1 is at least 10x chance.
LEARNED_LOSS_FRACTION, LEARNED_RECALL_FACTOR = 0.5, 10.0


def verdict(run: dict) -> dict:
    clip = run.get("final_loss", {}).get("loss_clip", float("nan"))
    chance = run["chance_loss"]
    r = run.get("retrieval", {})
    r1, c1 = r.get("r@1", float("nan")), r.get("chance@1", float("nan"))
    rel = (clip - chance) / chance if math.isfinite(clip) else float("nan")
    if not math.isfinite(clip):
        label, learned = "diverged (non-finite loss)", False
    elif abs(rel) < CHANCE_REL_TOL:
        label, learned = "did not learn (loss at chance)", False
    elif rel >= CHANCE_REL_TOL:
        label, learned = "did not learn (loss above chance)", False
    elif clip < LEARNED_LOSS_FRACTION * chance and r1 >= LEARNED_RECALL_FACTOR * c1:
        label, learned = "learned", True
    else:
        label, learned = "partly learned (below chance, short of the learning margin)", False
    return {"label": label, "learned": learned, "loss_over_chance": clip / chance if math.isfinite(clip) else None,
            "r1_over_chance": r1 / c1 if c1 and math.isfinite(r1) else None,
            "margins": {"loss_fraction_of_lnB": LEARNED_LOSS_FRACTION, "r1_factor_over_chance": LEARNED_RECALL_FACTOR}}
