"""Rules for multi-rank (torchrun / DDP) misconfiguration, on the records `diagnose.engine.ranks` and
`reference_models.distributed` add to the loss split's extras.

- `GatheredGradientScale`: the gradient DDP applies against the gradient of the global contrastive
  loss (`dist_grad_scale`, `dist_grad_cosine`). Gathering without gradient while every rank computes
  the whole (non-local) loss leaves only the local slice differentiable, and DDP's averaging then
  divides by W: the applied gradient is 1/W of the global one (open_clip issues 616/894). A gradient
  W times too large is the mirror case (summed rather than averaged across ranks).
- `GatheredWithoutGradient`: features gathered across ranks (candidates a multiple of the batch) while no
  parameter of the model but a temperature scalar gets a gradient: `torch.distributed.all_gather` fills
  buffers outside autograd, the rank's own shard included, so a loss over the gathered copies reaches no
  tower (open_clip#1047). The DDP gradient is then zero and `GatheredGradientScale` has no direction to
  compare; `no_gradient` / `embedding_without_gradient` read the same run as a cut path, and this names where.
- `ReplicasOutOfSync`: the spread of a float64 parameter checksum across ranks.
- `ChanceMismatch`: a loss that sits at ln(k x candidates) for an integer k >= 2, i.e. at the chance
  of k times the configured candidate count: features gathered across k ranks (or an effective
  batch k times the configured one) while the run was described with the per-rank batch. Consecutive
  ln(kB) lie within a few percent of each other, so almost any loss above ~ln(2.5 B) is "near" one:
  the value alone is no evidence. The mechanism (a uniform softmax over k x B columns) must show in
  this run: k ranks recorded; or the observed logits have k x B columns; or the observed B-column
  logits score the pairs at chance, ln(B), while the loss reads ln(kB) (it was computed over more
  candidates than the ones observed); or, with no logits observed, the loss sits at ln(kB) at every
  step of the window (a uniform softmax does not vary with the batch), not only on average.
"""

from __future__ import annotations

import math

import pandas as pd

from ..definitions import CHANCE_REL_TOL, learned, relative_gap
from ..findings import Finding
from .base import (
    EXP_SAFE,
    Emit,
    Rule,
    RunContext,
    end_loss,
    finite,
    grad_is_none,
    primary_component,
    rnd,
    series,
    span,
    targets,
    window,
)
from .gradients import TEMPERATURE_NAME

# A correct layout gives a scale of 1 and a cosine of 1 up to float32 rounding (measured ~1e-6); the
# misconfigurations give 1/W (<= 0.5 at W >= 2) or W, or drop the cross-rank terms (cosine < 1). 10%
# and 0.99 sit far from both.
GRAD_SCALE_TOL, GRAD_COSINE_MIN = 0.10, 0.99
# DDP replicas apply identical all-reduced gradients with identical optimizers, so their parameters
# are bit-identical; 1e-7 only leaves room for float64 summation of float32 values on another device.
REPLICA_SPREAD_TOL = 1e-7
EXTRAS = "extras"


class GatheredGradientScale(Rule):
    """Gradient DDP applies vs the gradient of the global loss, with gathered features."""

    topic = "distributed"
    # a wrong direction (cross-rank terms lost) misstates training by itself: tier 1. A uniform scale is
    # a contributing condition: Adam-type optimizers divide it out (second-moment normalisation), SGD
    # sees it as an lr divided (or multiplied) by W
    emits = (Emit("gathered_gradient_direction", ("error",), "distributed_gradient_missing", 1),
             Emit("gathered_gradient_scale", ("warning",), "distributed_gradient_scale", 3))
    needs = (("loss_split", "dist_grad_scale"), ("loss_split", "dist_grad_cosine"))
    thresholds = {"GRAD_SCALE_TOL": GRAD_SCALE_TOL, "GRAD_COSINE_MIN": GRAD_COSINE_MIN}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        scale = finite(series(df, "loss_split", EXTRAS, "dist_grad_scale"))
        cosine = finite(series(df, "loss_split", EXTRAS, "dist_grad_cosine"))
        if scale.empty or cosine.empty:
            return []
        s, c = float(scale.median()), float(cosine.median())
        if abs(s - 1) <= GRAD_SCALE_TOL and c >= GRAD_COSINE_MIN:
            return []
        size = series(df, "loss_split", EXTRAS, "world_size")
        w = int(size.iloc[-1]) if len(size) else None
        ev = {"grad_scale_median": rnd(s), "grad_cosine_median": rnd(c), "steps": span(scale), "world_size": w}
        fid, sev = "gathered_gradient_scale", "warning"
        if c < GRAD_COSINE_MIN:
            fid, sev = "gathered_gradient_direction", "error"
            what = (f"points elsewhere than the gradient of the global loss (cosine {c:.3f}): the cross-rank terms "
                    "are missing, as with a local loss over features gathered without gradient")
            fix = "With losses.local_loss, set losses.gather_with_grad (open_clip requires both together)."
        else:
            what = f"is {s:.3g} times the gradient of the global loss"
            fix = ("Gathered without gradient and a non-local loss: set losses.gather_with_grad (or local_loss with "
                   "gather_with_grad), or scale the lr by the world size knowingly." if s < 1 else
                   "The gradient is summed rather than averaged across ranks: divide the loss (or the all-reduced "
                   "gradient) by the world size.")
        ws = f" (world size {w}: 1/W = {1 / w:.3g})" if w else ""
        return [Finding(
            fid, sev, ctx.name,
            f"with features gathered across ranks, the gradient DDP applies {what}{ws}, median over the steps "
            f"{ev['steps'][0]}-{ev['steps'][1]}."
            + (" Adam-type optimizers mostly divide a uniform scale out; SGD sees it as the lr times that factor."
               if fid == "gathered_gradient_scale" else ""), ev, fix)]


class GatheredWithoutGradient(Rule):
    """Features gathered across ranks and no tower with a gradient: the gather cut the graph."""

    topic = "distributed"
    # not `explains=("no_gradient_path",)`: with the rank's own shard cut too, no gradient reaches either tower,
    # which is what no_gradient_path says (8 of the benchmark's cases of this bug are labelled so, 10 later blind ones
    # distributed_gradient_missing: a label split, not a mechanism to rank by); the finding names the gather beside
    # the cut path, it does not replace it
    emits = (Emit("gathered_without_gradient", ("error",), "distributed_gradient_missing", 1),)
    needs = (("gradient_flow", "grad_is_none"),)

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        b, n = ctx.batch_size, ctx.candidates
        mean, ln_b = end_loss(df)
        # a gather shows as candidates a multiple of the batch; with one rank (a 1-process torchrun launch) the
        # candidates equal the batch and the process group the watch recorded is what says a gather can be there
        size = series(df, "loss_split", EXTRAS, "world_size")
        world = int(size.iloc[-1]) if len(size) else None
        if not (b and n and n % b == 0 and (n >= 2 * b or world)) or learned(mean, ln_b):
            return []
        none = grad_is_none(df)
        cut = sorted(set(none[none["value"] > 0]["target"]))
        got = set(targets(df, "gradient_flow", "grad_norm"))
        # a temperature scalar multiplies the gathered logits and keeps its gradient; nothing upstream of it
        towers = [p for p in got if not TEMPERATURE_NAME.search(p)]
        if not cut or towers or (got & set(cut)):
            return []
        ev = {"batch_size": b, "candidates": n, "ranks_implied": n // b, "world_size": world,
              "parameters_without_gradient": cut[:8],
              "parameters_without_gradient_count": len(cut), "with_gradient": sorted(got), "loss_end": rnd(mean),
              "chance_ln_candidates": rnd(ln_b)}
        return [Finding(
            "gathered_without_gradient", "error", ctx.name,
            (f"the loss scores each row against {n} candidates gathered from {n // b} x {b} (features gathered across "
             "ranks)" if n >= 2 * b else f"the run is in a torch.distributed process group of {world} rank(s), where "
             f"features gathered for the loss are copies of the {b} rows")
            + f", and none of the model's {len(cut)} parameter tensors gets a gradient"
            + (f" (only {', '.join(sorted(got))} does)" if got else "")
            + ": the graph is cut where every tower's features meet, at the gather. torch.distributed.all_gather "
            "copies into fresh buffers outside autograd, the rank's own shard included.", ev,
            "Gather with torch.distributed.nn.all_gather (differentiable), or put the rank's own features back into "
            "the gathered list (open_clip's gather_features with gather_with_grad or local_loss).")]


class ReplicasOutOfSync(Rule):
    """Parameters that differ across ranks: the replicas no longer train the same model."""

    topic = "distributed"
    emits = (Emit("replicas_out_of_sync", ("error",), "replicas_out_of_sync", 1),)
    needs = (("loss_split", "replica_param_spread"),)
    thresholds = {"REPLICA_SPREAD_TOL": REPLICA_SPREAD_TOL}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        spread = series(df, "loss_split", EXTRAS, "replica_param_spread")
        bad = spread[(spread > REPLICA_SPREAD_TOL).values | pd.isna(spread).values]
        if bad.empty:
            return []
        first = int(bad.index[0])
        ev = {"first_step": first, "spread_at_first": rnd(bad.iloc[0], 12), "spread_max": rnd(finite(bad).max(), 12)
              if not finite(bad).empty else float("nan"), "checked_steps": span(spread),
              "tolerance": REPLICA_SPREAD_TOL}
        return [Finding(
            "replicas_out_of_sync", "error", ctx.name,
            f"at step {first} the parameter checksums of the ranks differ by {bad.iloc[0]:.3g} (relative): the "
            "replicas no longer hold the same model, so each rank trains its own copy and rank 0's checkpoint is "
            "not what the other ranks evaluate.", ev,
            "Look for rank-dependent code between backward and the update (a parameter changed on one rank, a "
            "buffer not broadcast, a gradient not all-reduced: modules outside DDP, no_sync left on).")]


class ChanceMismatch(Rule):
    """The loss sits at the chance of k x the configured candidates: the configured batch is not what
    each row is scored against."""

    topic = "distributed"
    emits = (Emit("batch_candidates_mismatch", ("warning",), "chance_miscounted", 2),)
    needs = (("loss_split", "value"), ("loss_split", "chance"))
    thresholds = {"CHANCE_REL_TOL": CHANCE_REL_TOL}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        comp = primary_component(df)
        mean, ln_pool = end_loss(df, comp)
        if not (math.isfinite(mean) and math.isfinite(ln_pool)) or abs(relative_gap(mean, ln_pool)) < CHANCE_REL_TOL:
            return []
        if mean - ln_pool > EXP_SAFE:  # a loss that far above chance counts no candidates (and exp() overflows)
            return []
        pool = round(math.exp(ln_pool))
        k = round(math.exp(mean) / pool)
        if k < 2 or abs(relative_gap(mean, math.log(k * pool))) >= CHANCE_REL_TOL:
            return []
        size = series(df, "loss_split", EXTRAS, "world_size")
        w = int(size.iloc[-1]) if len(size) else None
        evidence = self._mechanism(df, comp, k, pool, w)
        if evidence is None:
            return []
        steps = span(window(series(df, "loss_split", comp, "value")))
        why = (f"features gathered across the {w} ranks (B x world candidates)" if w == k else
               f"features gathered across {k} ranks, or an effective batch of {k * pool}")
        return [Finding(
            "batch_candidates_mismatch", "warning", ctx.name,
            f"{comp} averaged {mean:.4f} over steps {steps[0]}-{steps[1]}: that is ln({k * pool}) = "
            f"{math.log(k * pool):.4f}, chance for {k} x the {pool} candidates this run was described with, "
            f"not ln({pool}) = {ln_pool:.4f}. Each row is scored against {k * pool} candidates: {why}.",
            {"component": comp, "loss_mean": rnd(mean), "configured_candidates": pool, "implied_candidates": k * pool,
             "chance_configured": rnd(ln_pool), "chance_implied": rnd(math.log(k * pool)), "world_size": w,
             "window_steps": steps, "mechanism": evidence},
            f"Describe the run with candidates={k * pool} (diagnose.watch(..., candidates=B * world)) so chance "
            "and the at-chance verdict use the real count; then read the loss against that chance.", comp)]

    @staticmethod
    def _mechanism(df: pd.DataFrame, comp: str, k: int, pool: int, world: int | None) -> dict | None:
        """What in this run shows a uniform softmax over k x pool candidates (None: nothing does)."""
        if world == k:
            return {"reading": "world_size", "world_size": world}
        cols = series(df, "contrastive", "logits", "cols")
        if len(cols):
            c = int(cols.iloc[-1])
            if c == k * pool:
                return {"reading": "logits_cols", "logits_cols": c}
            diag = finite(series(df, "contrastive", "logits", "loss_diagonal"))
            if c != pool or diag.empty:
                return None
            d = float(window(diag).mean())
            # the observed logits give chance over their own pool while the loss reads ln(k pool)
            if abs(relative_gap(d, math.log(pool))) < CHANCE_REL_TOL:
                return {"reading": "observed_logits_at_chance", "loss_on_observed_logits": rnd(d)}
            return None
        values = window(finite(series(df, "loss_split", comp, "value")))
        worst = max(abs(relative_gap(float(v), math.log(k * pool))) for v in values) if len(values) else math.inf
        if worst < CHANCE_REL_TOL:
            return {"reading": "loss_constant_at_ln_kB", "max_step_gap": rnd(worst)}
        return None
