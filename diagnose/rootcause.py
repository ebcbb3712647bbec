"""Root-cause ranking: from one run's findings (and its verdict) to a ranked list of likely causes.

A pure function of the findings a normal run writes; it knows nothing of any benchmark or injected
fault. Each finding id implicates one cause with a *directness* tier:

  1  the finding names a mechanism that by itself breaks or misstates training (no gradient path,
     NaN, identical latents, a softmax over the batch, embeddings that are not unit norm, ...)
  2  the finding names a cause, but through a measurement a second cause could also produce
     (over-large updates, a temperature pinned where the softmax cannot be confident, loss at chance
     with spread-out embeddings)
  3  a contributing condition (a dominant shared input direction, near-identical latents)
  4  a symptom: something failed, not what (collapse, gradient norm falling, dead attention)

Causes are ranked by their best tier, then by the worst severity among their findings, then by the
number of findings supporting them. Info findings never implicate a cause. A run that learned has
no failure to explain: only tier-1 causes (latent bugs, e.g. logging that misstates a loss) are kept.
A run that did not learn with no cause-bearing finding gets `unexplained`.
"""

from __future__ import annotations

from .findings import severity_rank

# finding id -> (root cause, directness tier); the table order breaks remaining ties
EVIDENCE: dict[str, tuple[str, int]] = {
    "nonfinite_values": ("nonfinite_divergence", 1),
    "no_gradient": ("no_gradient_path", 1),
    "dead_gradients": ("no_gradient_path", 1),
    "latents_symmetric": ("symmetric_latents", 1),
    "softmax_over_batch": ("pooling_axis", 1),
    "loss_logging_inconsistent": ("logging_misstates_loss", 1),
    "components_identical": ("logging_misstates_loss", 1),  # only its error form (not at chance)
    "few_negatives": ("too_few_negatives", 1),
    "embeddings_not_normalised": ("not_normalised", 1),
    "weights_shrinking": ("weight_decay_collapse", 1),
    "update_ratio_low": ("learning_rate_too_low", 1),
    "update_ratio_high": ("learning_rate_too_high", 2),
    "exploding_gradients": ("learning_rate_too_high", 3),
    "chance_not_collapsed": ("misaligned_pairs", 2),
    "temperature_toward_1": ("temperature", 2),
    "temperature_at_clamp": ("temperature", 3),
    "input_shared_component": ("shared_input_component", 3),
    "latents_similar": ("symmetric_latents", 3),
    "vanishing_gradients": ("no_gradient_path", 3),
    "embedding_collapse": ("embedding_collapse", 4),
    "intermediate_collapse": ("embedding_collapse", 4),
    "gradient_fall": ("embedding_collapse", 4),
}
ORDER = {cause: i for i, cause in enumerate(dict.fromkeys(c for c, _ in EVIDENCE.values()))}


def _implicates(finding: dict) -> tuple[str, int] | None:
    fid, sev = finding["id"], finding["severity"]
    if sev == "info" or fid not in EVIDENCE:
        return None
    if fid == "components_identical" and sev != "error":  # the at-chance form is a symptom, not a bug
        return None
    return EVIDENCE[fid]


def rank_root_causes(findings: list[dict], verdict: dict | None = None) -> list[dict]:
    """Ranked causes for one run: [{"cause", "tier", "severity", "findings"}], most likely first."""
    causes: dict[str, dict] = {}
    for f in findings:
        hit = _implicates(f)
        if hit is None:
            continue
        cause, tier = hit
        c = causes.setdefault(cause, {"cause": cause, "tier": tier, "severity": f["severity"], "findings": []})
        c["tier"] = min(c["tier"], tier)
        if severity_rank(f["severity"]) > severity_rank(c["severity"]):
            c["severity"] = f["severity"]
        if f["id"] not in c["findings"]:
            c["findings"].append(f["id"])
    learned = bool(verdict and verdict.get("learned"))
    ranked = sorted(causes.values(), key=lambda c: (c["tier"], -severity_rank(c["severity"]), -len(c["findings"]),
                                                     ORDER[c["cause"]]))
    if learned:
        ranked = [c for c in ranked if c["tier"] == 1]
    elif verdict is not None and not ranked:
        ranked = [{"cause": "unexplained", "tier": 5, "severity": "error", "findings": []}]
    return ranked
