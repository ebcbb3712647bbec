"""Root-cause ranking: from one run's findings (and its verdict) to a ranked list of likely causes.

A pure function of the findings a normal run writes; it knows nothing of any benchmark or injected
fault. Each finding id implicates one cause with a *directness* tier, as its rule declares it
(`diagnose.core.rules`, `Emit(cause=..., tier=...)`):

  1  the finding names a mechanism that by itself breaks or misstates training (no gradient path,
     NaN, identical latents, a softmax over the batch, embeddings that are not unit norm, ...)
  2  the finding names a cause, but through a measurement a second cause could also produce
     (over-large updates, a temperature pinned where the softmax cannot be confident, loss at chance
     with spread-out embeddings)
  3  a contributing condition (a dominant shared input direction, near-identical latents)
  4  a symptom: something failed, not what (collapse, gradient norm falling, dead attention)

A contributing condition (tier 3) is one that healthy runs share (inputs with a dominant direction,
latents that start alike): it is listed, never first. When nothing names a mechanism or a measured
cause (tiers 1-2), the symptom (tier 4) comes first, and a failed run with only contributing conditions
is headed `unexplained` with the conditions under it. Each cause carries its `role`: mechanism,
measured, contributing or symptom.

Causes are ranked by their best tier, then by the worst severity among their findings, then by the
number of findings supporting them, then by the order of `diagnose.core.rules.causes.CAUSES`; a cause that a present
finding declares it explains (`Emit.explains`: an exp() that overflowed on unnormalised logits explains the
divergence) comes right after the cause that explains it, at that cause's tier where its own is better; and when
the logged loss is shown not to be the loss of the logits it is logged with (`loss_logged_not_tracking`: the
logits learned, the log says otherwise), `logging_misstates_loss` comes first, since findings whose severity
reads "not learned" from the logged loss read it from that misstated value. Info
findings never implicate a cause. A run that learned has no failure to explain: only tier-1 causes (latent
bugs, e.g. logging that misstates a loss) are kept. A run that did not learn with no cause-bearing finding gets
`unexplained`.
"""

from __future__ import annotations

from ..findings import severity_rank
from .catalogue import declarations
from .causes import BY_ID, ORDER, UNEXPLAINED


def _explained(findings: list[dict], declared: dict) -> dict[str, int]:
    """Causes that a present finding declares it accounts for (`Emit.explains`), each with the best tier among the
    findings that explain it."""
    out: dict[str, int] = {}
    for f in findings:
        hit = _implicates(f, declared)
        for c in declared[f["id"]].explains if hit else ():
            out[c] = min(out.get(c, hit[1]), hit[1])
    return out


def _implicates(finding: dict, declared: dict) -> tuple[str, int] | None:
    e = declared.get(finding["id"])
    if e is None or e.cause is None or finding["severity"] not in e.implicates_at:
        return None
    return e.cause, e.tier


def rank_root_causes(findings: list[dict], verdict: dict | None = None) -> list[dict]:
    """Ranked causes for one run: [{"cause", "title", "fix", "tier", "severity", "findings"}], most likely first."""
    declared = declarations()
    causes: dict[str, dict] = {}
    for f in findings:
        hit = _implicates(f, declared)
        if hit is None:
            continue
        cause, tier = hit
        c = causes.setdefault(cause, {"cause": cause, "title": BY_ID[cause].title, "fix": BY_ID[cause].fix,
                                      "tier": tier, "severity": f["severity"], "findings": []})
        c["tier"] = min(c["tier"], tier)
        if severity_rank(f["severity"]) > severity_rank(c["severity"]):
            c["severity"] = f["severity"]
        if f["id"] not in c["findings"]:
            c["findings"].append(f["id"])
    learned = bool(verdict and verdict.get("learned"))
    for c in causes.values():
        c["role"] = ROLES[c["tier"]]
    # a finding that the logged loss contradicts the logits' own (they learned, it says otherwise) puts the
    # logging first: the verdict and every severity read from the logged loss ("not learned") rest on that value
    loss_void = any(f["id"] in LOSS_CONTRADICTED and f["severity"] == "error" for f in findings)
    # contributing conditions (tier 3) after the symptoms (tier 4): shared by healthy runs, never first
    # an explained cause ranks right after the cause that explains it, at that cause's tier where its own is better
    explained = _explained(findings, declared)
    ranked = sorted(causes.values(), key=lambda c: (not (loss_void and c["cause"] == LOSS_CONTRADICTED_CAUSE),
                                                     max(CONTRIBUTING_LAST.get(c["tier"], c["tier"]),
                                                         explained.get(c["cause"], 0)),
                                                     c["cause"] in explained,
                                                     -severity_rank(c["severity"]), -len(c["findings"]),
                                                     ORDER[c["cause"]]))
    if learned:
        ranked = [c for c in ranked if c["tier"] == 1]
    elif verdict is not None and (not ranked or ranked[0]["tier"] == 3):
        ranked = [{"cause": UNEXPLAINED.id, "title": UNEXPLAINED.title, "fix": UNEXPLAINED.fix, "tier": 5,
                   "severity": "error", "findings": [], "role": "unexplained"}] + ranked
    return ranked


ROLES = {1: "mechanism", 2: "measured", 3: "contributing", 4: "symptom"}
# findings that the logged loss is not the loss of the logits it is logged with, the logits having learned
# (`loss_logging.LoggedNotTracking`), and the cause they implicate; other logging findings (a total that is not
# the weighted sum, a scaled or averaged log) leave the logged loss's trend readable, so they rank as declared
LOSS_CONTRADICTED, LOSS_CONTRADICTED_CAUSE = frozenset({"loss_logged_not_tracking"}), "logging_misstates_loss"
CONTRIBUTING_LAST = {3: 4.5}
