"""Rules on a run's verdict: a run that ended below chance but far short of the learning margin.

A verdict rule reads what the run summary says at its end (the end-of-run CLIP loss against ln B, and
held-out R@1 against chance when it was measured), not the probe records: held-out retrieval is measured
once, after training, and never enters the records.
"""

from __future__ import annotations

import math

from ..definitions import LEARNED_LOSS_FRACTION, LEARNED_RECALL_FACTOR, left_chance
from ..findings import Finding
from .base import Emit, Rule, RunContext, rnd

# "Far short": the run covered less than half of the way from chance to the learning margin on a measure
# the margin is judged by (definitions.learned). On the loss, from ln B down to LEARNED_LOSS_FRACTION x ln B:
# the midpoint is FAR_SHORT_LOSS_FRACTION x ln B. On held-out R@1, from chance (1x) up to LEARNED_RECALL_FACTOR
# x chance: the midpoint is FAR_SHORT_RECALL_FACTOR x chance. Half of the way is the line between "a run
# that nearly learned" (a longer run or a small change may carry it over) and "a run that did not": a run
# that ends beyond the midpoint on both is still "partly learned", a warning-level state.
FAR_SHORT_SHARE = 0.5
FAR_SHORT_LOSS_FRACTION = 1.0 - FAR_SHORT_SHARE * (1.0 - LEARNED_LOSS_FRACTION)
FAR_SHORT_RECALL_FACTOR = 1.0 + FAR_SHORT_SHARE * (LEARNED_RECALL_FACTOR - 1.0)


def _main_loss(run: dict) -> float | None:
    final = run.get("final_loss") or {}
    comps = [k for k in final if k.startswith("loss_")]
    value = final.get("loss_clip", final.get(comps[0]) if comps else None)
    return float(value) if value is not None else None


class FarShortOfMargin(Rule):
    """A run that left chance (its end-of-run loss is below the at-chance band) but ends far short of the
    learning margin: less than half of the way from ln B to the learned bar on the loss, or from chance to
    the learned bar on held-out R@1 when it was measured. Loss at or above ln B is `loss_at_chance` /
    `loss_above_chance`; this is the run that moved a little and stopped far from learning, which a
    "partly learned" verdict with warnings alone would let pass as no error."""

    topic = "verdict"
    kind = "verdict"
    emits = (Emit("not_learned_far_short", ("error",)),)
    thresholds = {"FAR_SHORT_LOSS_FRACTION": FAR_SHORT_LOSS_FRACTION,
                  "FAR_SHORT_RECALL_FACTOR": FAR_SHORT_RECALL_FACTOR}

    def check(self, run: dict, ctx: RunContext) -> list[Finding]:
        loss, ln_b = _main_loss(run), run.get("chance_loss")
        if loss is None or ln_b is None or not (math.isfinite(loss) and math.isfinite(ln_b)) or ln_b <= 0:
            return []
        if not left_chance(loss, ln_b) or (run.get("verdict") or {}).get("learned"):
            return []
        r = run.get("retrieval") or {}
        r1, chance1 = r.get("r@1"), r.get("chance@1")
        factor = r1 / chance1 if r1 is not None and chance1 and math.isfinite(r1) else None
        covered_loss = (1.0 - loss / ln_b) / (1.0 - LEARNED_LOSS_FRACTION)
        covered_r1 = (factor - 1.0) / (LEARNED_RECALL_FACTOR - 1.0) if factor is not None else None
        short = [m for m, covered in (("loss", covered_loss), ("held-out R@1", covered_r1))
                 if covered is not None and covered < FAR_SHORT_SHARE]
        if not short:
            return []
        ev = {"loss_over_lnB": rnd(loss / ln_b), "loss": rnd(loss), "chance_ln_B": rnd(ln_b),
              "learned_loss_bar": rnd(LEARNED_LOSS_FRACTION * ln_b),
              "far_short_loss": rnd(FAR_SHORT_LOSS_FRACTION * ln_b),
              "share_of_the_way_loss": rnd(covered_loss, 3)}
        recall = ""
        if factor is not None:
            ev = {"loss_over_lnB": ev.pop("loss_over_lnB"), "r1_over_chance": rnd(factor, 2), **ev}
            ev.update({"r@1": rnd(r1), "chance@1": rnd(chance1),
                       "learned_r1_factor": LEARNED_RECALL_FACTOR, "far_short_r1_factor": FAR_SHORT_RECALL_FACTOR,
                       "share_of_the_way_r1": rnd(covered_r1, 3)})
            recall = f" and held-out R@1 {r1:.4f} = {factor:.1f}x chance (learned: >= {LEARNED_RECALL_FACTOR:g}x)"
        return [Finding(
            "not_learned_far_short", "error", ctx.name,
            f"not learned: far short of the margin. The end-of-run loss {loss:.4f} is {loss / ln_b:.3f} x ln(B) = "
            f"{ln_b:.4f} (learned: < {LEARNED_LOSS_FRACTION:g} x ln(B) = {LEARNED_LOSS_FRACTION * ln_b:.4f}){recall}: "
            f"the run covered less than half of the way from chance to the learning margin on "
            f"{' and '.join(short)}. It left chance, so the loss is not pinned at ln(B), but it did not learn.", ev,
            "Read the root causes of this run; `diagnose ablate` tests them one at a time against this baseline.",
            "loss_clip" if "loss_clip" in (run.get("final_loss") or {}) else "")]
