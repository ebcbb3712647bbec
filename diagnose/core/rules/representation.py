"""Rules on representations: collapsed embeddings or intermediate outputs, inputs dominated by one
shared direction, embeddings that are not unit norm, a loss at chance with spread-out embeddings."""

from __future__ import annotations

import math

import pandas as pd

from ..definitions import CHANCE_REL_TOL, HOLDS_LOSS_SHARE, at_chance, learned, left_chance
from ..findings import Finding
from .base import (
    Emit,
    Rule,
    RunContext,
    end_loss,
    finite,
    primary_component,
    rnd,
    saved_share,
    select,
    series,
    span,
    targets,
    window,
)
from .gradients import SETTLED_CUMULATIVE_UPDATE, UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW, peak_model_update
from .loss import ranking_learned
from .persistence import PERSIST_MIN_OBS, falling, gap_to_chance, held_since, loss_falling, stuck

# Mean off-diagonal cosine of L2-normalised embeddings: isotropic random vectors give ~0 (±1/sqrt(D));
# 0.95 means every embedding lies within ~18 degrees of one direction: retrieval can't separate them.
COLLAPSE_COSINE = 0.95
# Embedding rows that are copies to float rounding at the first step (a text tower that reads only a token that
# every caption shares, a truncation that drops the one that differs): that tower discards its input, so its
# pairs cannot be read (the collapse rules name it); distinct inputs through random towers stay far below.
IDENTICAL_ROWS_COSINE = 0.9999
# Input features whose mean-pooled vectors have mean pairwise cosine above this share one dominant
# direction (the anisotropy of transformer hidden states, Ethayarajh 2019).
SHARED_INPUT_COSINE = 0.5
# Embeddings that enter cosine-similarity logits must be unit norm; F.normalize in float32 leaves
# |norm - 1| ~ 1e-7, bf16 ~ 4e-3 (8 mantissa bits); 1e-2 is above both roundings.
UNIT_NORM_TOL = 1e-2
# Rows that are not unit norm are a warning until the step's own tensors show what the norms cost: the same
# embeddings as cosines at their best scale against the logits as given at theirs (probes.contrastive, same
# steps, same grid of sharper factors, so the temperature cancels out). Where the directions alone would at
# least halve the loss (definitions.HOLDS_LOSS_SHARE), the norms decide more of the ranking than the directions.
NORMS_COST_SHARE = HOLDS_LOSS_SHARE
# The cost is read on expensive steps only (ten or more steps apart, fewer on a fast model under the probe
# budget): two readings in a row confirm it, while the off-unit norms themselves persist on every step.
COST_READINGS = 2
# Unit-norm columns on this many observed steps (each its own batch) are a normalisation over the batch axis.
OVER_BATCH_MIN_OBS = 3
# RankMe effective rank (Garrido et al. 2023) of a batch of embeddings: ~1 when they all point one way
# (complete collapse); at least 4 independent directions in use means the embeddings are spread out.
SPREAD_EFFECTIVE_RANK = 4.0
EMBEDDINGS = ("image", "text")


def discards_input(df: pd.DataFrame, cos: pd.Series) -> bool:
    """The rows were copies (IDENTICAL_ROWS_COSINE) at every observation from the first, over PERSIST_MIN_OBS of
    them, with the loss not falling. Then every row of the logits is constant across its candidates, so the
    symmetric loss cannot go below ln(B) (logsumexp >= mean + ln B) whatever the other tower does: this is not
    the contraction a healthy run passes through (its rows start spread and spread again), and waiting for the
    weights to move by their own norm proves nothing (a tower that reads a token every caption shares, or
    drops the one that differs, stays so however its weights move)."""
    cos = finite(cos)
    return (len(cos) >= PERSIST_MIN_OBS and bool((cos >= IDENTICAL_ROWS_COSINE).all())
            and not loss_falling(df, int(cos.index[0])))


class EmbeddingCollapse(Rule):
    """Mean pairwise cosine of the image/text embeddings and of watched intermediate outputs."""

    topic = "representation"
    emits = (Emit("embedding_collapse", ("error",), "embedding_collapse", 4),
             Emit("intermediate_collapse", ("warning",), "embedding_collapse", 4))
    needs = (("collapse", "cosine_mean"),)
    thresholds = {"COLLAPSE_COSINE": COLLAPSE_COSINE, "SETTLED_CUMULATIVE_UPDATE": SETTLED_CUMULATIVE_UPDATE,
                  "IDENTICAL_ROWS_COSINE": IDENTICAL_ROWS_COSINE, "PERSIST_MIN_OBS": PERSIST_MIN_OBS}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        out = [f for name in EMBEDDINGS for f in self._embedding(df, ctx, name)]
        for name in targets(df, "collapse", "cosine_mean"):
            if name in (*EMBEDDINGS, "input"):
                continue
            cos = series(df, "collapse", name, "cosine_mean")
            w = window(cos)
            if len(w) and float(w.mean()) >= COLLAPSE_COSINE:
                out.append(Finding(
                    "intermediate_collapse", "warning", ctx.name,
                    f"intermediate output '{name}' is input-independent: mean pairwise cosine {w.mean():.3f} "
                    f"(was {cos.iloc[0]:.3f} at step {int(cos.index[0])}).",
                    {"output": name, "cosine_mean_end": rnd(w.mean()), "cosine_mean_first": rnd(cos.iloc[0]),
                     "window_steps": span(w)},
                    "The collapse starts at or before this module.", name))
        return out

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        if finding.id != "embedding_collapse":
            return True
        # contrastive training often contracts first and spreads later (a healthy run's text embeddings:
        # cosine 0.94 -> 0.99 and rank 10.5 -> 5.6 over ten steps, then rank 25): the collapse must have
        # held while the weights moved by their own norm, with the loss not falling and the effective
        # rank not recovering over that span (rules.persistence)
        cos = series(df, "collapse", finding.target, "cosine_mean")
        if discards_input(df, cos):
            return True
        holds = cos >= COLLAPSE_COSINE
        if not stuck(df, holds):
            return False
        rank = finite(series(df, "collapse", finding.target, "effective_rank"))
        return not falling(-rank[rank.index >= held_since(holds)])

    def _embedding(self, df: pd.DataFrame, ctx: RunContext, name: str) -> list[Finding]:
        cos = series(df, "collapse", name, "cosine_mean")
        if cos.empty:
            return []
        w = window(cos)
        if not math.isfinite(float(w.mean())):  # non-finite rows are nonfinite_values' finding, not a collapse
            return []
        if float(w.mean()) < COLLAPSE_COSINE:
            return self._on_one_line(df, ctx, name)
        rank = series(df, "collapse", name, "effective_rank")
        ev = {"embedding": name, "window_steps": span(w), "cosine_mean_end": rnd(w.mean()),
              "cosine_mean_first": rnd(cos.iloc[0]), "first_step": int(cos.index[0])}
        if not rank.empty:
            ev["effective_rank_end"] = rnd(rank.iloc[-1], 2)
            ev["effective_rank_first"] = rnd(rank.iloc[0], 2)
        crossed = cos[cos >= COLLAPSE_COSINE]
        ev["first_step_above_threshold"] = int(crossed.index[0]) if len(crossed) else None
        return [Finding(
            "embedding_collapse", "error", ctx.name,
            f"{name} embeddings collapsed: mean pairwise cosine {w.mean():.3f} over steps "
            f"{ev['window_steps'][0]}-{ev['window_steps'][1]} (was {cos.iloc[0]:.3f} at step {int(cos.index[0])}); "
            f"every {name} maps to nearly the same vector, so the logits are uniform.", ev,
            f"Find the layer where the {name} path stops depending on its input (collapse of watched "
            "outputs, attention entropy), and check the update/param ratios of that path.", name)]


    @staticmethod
    def _on_one_line(df: pd.DataFrame, ctx: RunContext, name: str) -> list[Finding]:
        """Rows that are +-one vector (a symmetric init: every unit computes the same function, and a bias-free last
        layer maps it onto one direction with either sign): the mean cosine stays near 0, but the top singular
        direction holds the energy. Logits of +-one vector take two values per row, so no row can single out its
        pair among the rows of its own sign."""
        share = finite(series(df, "collapse", name, "top_sv_share"))
        if share.empty or float(window(share).mean()) < COLLAPSE_COSINE:
            return []
        w = window(share)
        ev = {"embedding": name, "window_steps": span(w), "top_direction_share_end": rnd(w.mean()),
              "top_direction_share_first": rnd(share.iloc[0]), "first_step": int(share.index[0]),
              "cosine_mean_end": rnd(window(series(df, "collapse", name, "cosine_mean")).mean()), "sign": "either"}
        rank = finite(series(df, "collapse", name, "effective_rank"))
        if len(rank):
            ev["effective_rank_end"] = rnd(rank.iloc[-1], 2)
        return [Finding(
            "embedding_collapse", "error", ctx.name,
            f"{name} embeddings collapsed onto one line: the top singular direction holds {w.mean():.1%} of their "
            f"energy over steps {ev['window_steps'][0]}-{ev['window_steps'][1]} (from step {ev['first_step']}: "
            f"{share.iloc[0]:.1%}), with either sign (mean pairwise cosine {ev['cosine_mean_end']:.3f}); every {name} "
            "is +-the same vector, so each row of the logits takes two values.", ev,
            f"Look for a symmetric initialisation on the {name} path (constant or zero weights: every unit computes "
            "the same function and gets the same update) and for a layer whose output stops depending on its input.",
            name)]


class InputSharedComponent(Rule):
    """Mean pairwise cosine of the (mean-pooled) inputs: one direction shared by every sample. A contributing
    condition (healthy runs learn on anisotropic features) unless the run shows it carried through: see
    `_carried`."""

    topic = "representation"
    emits = (Emit("input_shared_component", ("info", "warning"), "shared_input_component", 3),
             Emit("input_collapses_embeddings", ("error",), "shared_input_component", 2))
    needs = (("collapse", "cosine_mean"),)
    thresholds = {"SHARED_INPUT_COSINE": SHARED_INPUT_COSINE, "COLLAPSE_COSINE": COLLAPSE_COSINE,
                  "CHANCE_REL_TOL": CHANCE_REL_TOL, "PERSIST_MIN_OBS": PERSIST_MIN_OBS}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        cos = series(df, "collapse", "input", "cosine_mean")
        if cos.empty or float(cos.mean()) < SHARED_INPUT_COSINE:
            return []
        share = series(df, "collapse", "input", "top_sv_share")
        ev = {"input_cosine_mean": rnd(cos.mean()), "steps": span(cos)}
        if not share.empty:
            ev["top_singular_direction_share"] = rnd(share.mean())
        carried = self._carried(df, cos)
        if carried:
            return [self._carried_finding(ctx, ev, carried)]
        return [Finding(
            "input_shared_component", "info" if left_chance(*end_loss(df)) else "warning", ctx.name,
            f"the input features share one dominant direction: mean pairwise cosine of mean-pooled inputs "
            f"{cos.mean():.3f}. A model must learn to cancel it before images become distinguishable; a "
            "mean over tokens or an over-large update keeps it.", ev,
            "Compare with the input's content variance; try centring the features (subtract the dataset mean) "
            "as an ablation.", "input")]

    @staticmethod
    def _carried(df: pd.DataFrame, cos: pd.Series) -> dict:
        """The shared direction measured where it ends up: the inputs are as collapsed as collapsed embeddings
        (every input within ~18 degrees of one direction, COLLAPSE_COSINE) from the first observation, and an
        embedding was collapsed at its own first observation, before any update could have contracted it, and
        is still collapsed at the end of a run that did not leave chance. A random network maps inputs that
        are one vector plus a small ripple to outputs that are one vector plus a small ripple; that is the
        inputs' own collapse carried through, not the contraction a healthy run passes through (its inputs
        are spread: the healthy runs of benchmarks/real_faults start with image cosines up to 0.99 from
        inputs near 0). Empty when not all of that holds."""
        cos = finite(cos)
        if len(cos) == 0 or float(cos.iloc[0]) < COLLAPSE_COSINE or left_chance(*end_loss(df)):
            return {}
        out = {}
        for name in EMBEDDINGS:
            emb = finite(series(df, "collapse", name, "cosine_mean"))
            if len(emb) and float(emb.iloc[0]) >= COLLAPSE_COSINE and float(window(emb).mean()) >= COLLAPSE_COSINE:
                out[name] = {"cosine_first": rnd(emb.iloc[0]), "cosine_end": rnd(window(emb).mean()),
                             "first_step": int(emb.index[0])}
        return out

    @staticmethod
    def _carried_finding(ctx: RunContext, ev: dict, carried: dict) -> Finding:
        ev = {**ev, "collapsed_from_first_step": carried}
        names = " and ".join(carried)
        first = ", ".join(f"{k} {v['cosine_first']:.4f} at step {v['first_step']}" for k, v in carried.items())
        return Finding(
            "input_collapses_embeddings", "error", ctx.name,
            f"the inputs share one dominant direction (mean pairwise cosine {ev['input_cosine_mean']:.3f}: every "
            f"input lies within a few degrees of the same vector) and the {names} embeddings were collapsed from "
            f"their first observation ({first}), before any update, and stay so: the network carries the "
            "inputs' shared direction through, and the image-to-image differences are a ripple on top of it.",
            ev, "Centre or standardise the inputs (subtract the dataset mean per feature/channel, divide by the std; "
            "for images, the processor's rescale-and-normalise) and rerun.", "input")

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        if finding.id != "input_collapses_embeddings":
            return True
        # early on, the same state is a slow healthy start: inputs that share one direction (mean-pooled cosine
        # 0.985-0.997) give embeddings collapsed at 0.992-0.999 from step 0 that sit near chance for 20-40 steps
        # and then learn (the four offset runs of benchmarks/real_faults/healthy.py), while the faults' loss sits at
        # chance just the same; what separates them shows only later. So the state must persist as any state
        # normal at init does (rules.persistence.stuck: held while the weights moved by their own norm, or over
        # half of a run that moved that much, with the loss not falling), and the collapse must not be easing
        for name in finding.evidence["collapsed_from_first_step"]:
            emb = finite(series(df, "collapse", name, "cosine_mean"))
            holds = emb >= COLLAPSE_COSINE
            since = held_since(holds)
            if since is not None and stuck(df, holds) and not falling(emb[emb.index >= since]):
                return True
        return False


def norms_cost(df: pd.DataFrame) -> pd.Series:
    """Per expensive step: the share of the logits' best-scale loss that the embeddings' directions alone (as
    cosines, at their own best scale) would not pay (probes.contrastive). Empty without the two readings."""
    return saved_share(df, "loss_best_scale_same_step", "loss_cosine_best_scale")


class EmbeddingsNotNormalised(Rule):
    """Norms of the embeddings that enter the contrastive logits."""

    topic = "representation"
    emits = (Emit("embeddings_not_normalised", ("warning", "error"), "not_normalised", 1),
             Emit("normalised_over_batch", ("error",), "not_normalised", 1),
             Emit("unnormalised_logits_overflow", ("error",), "not_normalised", 1, explains=("nonfinite_divergence",)))
    needs = (("collapse", "norm_mean"),)
    thresholds = {"UNIT_NORM_TOL": UNIT_NORM_TOL, "NORMS_COST_SHARE": NORMS_COST_SHARE}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        over = self._over_batch(df, ctx)
        if over:
            return over
        bad = {}
        for name in EMBEDDINGS:
            norm = finite(series(df, "collapse", name, "norm_mean"))
            # unit rows have the same norm: a mean of 1 with rows spread around it is not normalised either
            # (the spread is read directly by probes.contrastive: std / mean of the row norms)
            cv = finite(series(df, "contrastive", name, "norm_cv"))
            spread = float(cv.median()) if len(cv) else 0.0
            if len(norm) and (float((norm - 1.0).abs().median()) > UNIT_NORM_TOL or spread > UNIT_NORM_TOL):
                bad[name] = {"norm_mean_first": rnd(norm.iloc[0]), "norm_mean_end": rnd(norm.iloc[-1]),
                             "norm_mean_median": rnd(norm.median()), "norm_cv_median": rnd(spread)}
        if not bad:
            return []
        ent = series(df, "softmax_entropy", "logits.image_to_text", "entropy_mean")
        ev = {"embeddings": bad, "tolerance": UNIT_NORM_TOL}
        if len(ent):
            ev["logits_entropy_first"] = rnd(ent.iloc[0])
        medians = ", ".join(f"{k} {v['norm_mean_median']:.3g}" for k, v in bad.items())
        share = norms_cost(df)
        cost, severity = "", "warning"
        if len(share):
            given = window(series(df, "contrastive", "logits", "loss_best_scale_same_step")).mean()
            cosines = window(series(df, "contrastive", "logits", "loss_cosine_best_scale")).mean()
            ev.update(loss_best_scale_same_steps=rnd(given), loss_as_cosines_best_scale=rnd(cosines),
                      norms_cost_share=rnd(window(share).mean()), window_steps=span(window(share)))
            severity = "error" if float(window(share).mean()) >= NORMS_COST_SHARE else "warning"
            cost = (f" On the same steps, the same embeddings as cosines would reach {cosines:.4f} at their best "
                    f"scale against {given:.4f} for the logits as given at theirs: the norms cost "
                    f"{window(share).mean():.0%} of the loss.")
        return [Finding(
            "embeddings_not_normalised", severity, ctx.name,
            f"the {' and '.join(bad)} embeddings that enter the contrastive logits are not unit norm (median norm "
            f"{medians}): the logits are raw dot products, "
            "not cosines, so the temperature has no fixed meaning and the logits can saturate the softmax." + cost,
            ev, "L2-normalise both embeddings right before the similarity (F.normalize(x, dim=-1)).",
            next(iter(bad)))] + self._overflow(df, ctx, bad, medians)

    @staticmethod
    def _overflow(df: pd.DataFrame, ctx: RunContext, bad: dict, medians: str) -> list[Finding]:
        """The loss non-finite from its first step while the cross-entropy of that step's own logits, computed
        stably (log-softmax, `loss_diagonal`), is finite: the logits are finite, the loss's own arithmetic (an exp
        of raw dot products over a temperature) overflowed. Unnormalised embeddings are then why it diverged."""
        comp = primary_component(df)
        loss = series(df, "loss_split", comp, "value")
        if loss.empty or math.isfinite(float(loss.iloc[0])):
            return []
        first = int(loss.index[0])
        stable = series(df, "contrastive", "logits", "loss_diagonal")
        ev = {"first_step": first, "loss_first": str(float(loss.iloc[0])),
              "embeddings": {k: v["norm_mean_first"] for k, v in bad.items()}}
        if first in stable.index:  # the step's own logits were handed over: their cross-entropy, computed stably
            if not math.isfinite(float(stable[first])):
                return []
            ev["stable_cross_entropy_first"] = rnd(float(stable[first]))
            inputs = (f"the cross-entropy of the same step's logits computed stably (log-softmax) is "
                      f"{float(stable[first]):.4f}: the logits are finite and the loss's own arithmetic overflows on "
                      "them (an exp of logits this large), and they are this large")
        else:  # no logits: the embeddings of that step, before any update, finite (their norms read)
            norms = {k: series(df, "collapse", k, "norm_mean") for k in bad}
            if not all(first in v.index and math.isfinite(float(v[first])) for v in norms.values()):
                return []
            inputs = ("the embeddings of that step, before any update, are finite: the loss's own arithmetic fails on "
                      "their raw dot products (an exp of dot products over a temperature underflows or overflows), "
                      "which are that large")
        return [Finding(
            "unnormalised_logits_overflow", "error", ctx.name,
            f"{comp} is {float(loss.iloc[0])} from its first step ({first}), while {inputs} because the embeddings "
            f"are not unit norm (median norm {medians}). The divergence follows from it.",
            ev, "L2-normalise both embeddings before the similarity; compute the loss with F.cross_entropy "
            "(log-softmax) rather than exp() and a division.", comp)]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        if finding.id != "embeddings_not_normalised":
            return True  # normalised over the batch, an overflow from the first step: fixed from the first step
        # the rows off unit norm on PERSIST_MIN_OBS observed steps (read every step), and what the norms cost,
        # read on the sparser expensive steps, at least NORMS_COST_SHARE on the last COST_READINGS of them without
        # shrinking (a run whose norms settle toward a common value stops paying it)
        name = finding.target
        norm = finite(series(df, "collapse", name, "norm_mean"))
        cv = finite(series(df, "contrastive", name, "norm_cv")).reindex(norm.index).fillna(0.0)
        off = held_since(((norm - 1.0).abs() > UNIT_NORM_TOL) | (cv > UNIT_NORM_TOL))
        if off is None or int((norm.index >= off).sum()) < PERSIST_MIN_OBS:
            return False
        share = norms_cost(df)
        since = held_since(share >= NORMS_COST_SHARE)
        if since is None:
            return False
        share = share[share.index >= since]
        return len(share) >= COST_READINGS and not falling(share)


    @staticmethod
    def _over_batch(df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        """Columns at unit norm on every observed step: F.normalize(x, dim=0) (the batch axis). No embedding has
        that by chance: each of its features is scaled by the batch it came in."""
        hit = {}
        for name in EMBEDDINGS:
            cols = finite(series(df, "collapse", name, "column_norm_dev"))
            norm = finite(series(df, "collapse", name, "norm_mean"))
            if len(cols) >= OVER_BATCH_MIN_OBS and bool((cols < UNIT_NORM_TOL).all()):
                hit[name] = {"column_norm_dev_max": rnd(float(cols.max()), 8), "row_norm_mean_median":
                             rnd(float(norm.median())), "steps": span(cols)}
        if not hit:
            return []
        return [Finding(
            "normalised_over_batch", "error", ctx.name,
            f"the {' and '.join(hit)} embeddings are L2-normalised over the batch axis: on every observed step each "
            "feature column has unit norm across the batch (largest deviation "
            f"{max(v['column_norm_dev_max'] for v in hit.values()):.1g}; median row norm "
            f"{', '.join(str(v['row_norm_mean_median']) for v in hit.values())}): the logits are not cosines, every "
            "embedding is scaled by the batch it came in, and the row norms scale with 1/sqrt(batch).",
            {"embeddings": hit, "tolerance": UNIT_NORM_TOL},
            "Normalise each embedding: F.normalize(x, dim=-1) (dim=0 is the batch).", next(iter(hit)))]


class CollapsedByUpdate(Rule):
    """Embeddings spread out at one reading and collapsed at the next, for good, with an optimizer step between
    the two that moved the whole model by more than UPDATE_RATIO_HIGH of its weights' norm (10-100x the peak of a
    healthy run): that step rewrote the layers, and the collapse is what it left. A collapse that builds over many
    steps of ordinary size (a temperature, a symmetric init, a decay) has no such step before it."""

    topic = "representation"
    emits = (Emit("collapsed_by_update", ("error",), "learning_rate_too_high", 1, explains=("embedding_collapse",)),)
    needs = (("collapse", "cosine_mean"), ("gradient_flow.model", "update_to_param"))
    thresholds = {"COLLAPSE_COSINE": COLLAPSE_COSINE, "UPDATE_RATIO_HIGH": UPDATE_RATIO_HIGH}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        mean, ln_b = end_loss(df)
        up = finite(series(df, "gradient_flow.model", "model", "update_to_param"))
        if up.empty or float(up.max()) <= UPDATE_RATIO_HIGH or not math.isfinite(mean) or learned(mean, ln_b):
            return []
        for name in EMBEDDINGS:
            cos = finite(series(df, "collapse", name, "cosine_mean"))
            if len(cos) < 2 or float(window(cos).mean()) < COLLAPSE_COSINE:
                continue
            spread = cos < COLLAPSE_COSINE
            if not spread.any():
                continue  # collapsed from the first reading: no step made it so
            last_spread = int(spread[spread].index[-1])
            after = cos[cos.index > last_spread]
            if after.empty:
                continue
            since = int(after.index[0])
            between = up[(up.index >= last_spread) & (up.index < since)]
            if between.empty or float(between.max()) <= UPDATE_RATIO_HIGH:
                continue
            at = int(between.idxmax())
            ev = {"embedding": name, "spread_step": last_spread, "cosine_spread": rnd(float(cos[last_spread])),
                  "collapsed_from_step": since, "cosine_collapsed": rnd(float(after.iloc[0])),
                  "cosine_end": rnd(float(window(cos).mean())), "update_step": at,
                  "update_to_param": rnd(float(between.max()), 4), "threshold": UPDATE_RATIO_HIGH,
                  "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b), "lr": ctx.optimizer.get("lr")}
            ev["readings_collapsed"] = int(len(after))
            return [Finding(
                "collapsed_by_update", "error", ctx.name,
                f"the {name} embeddings were spread out at step {last_spread} (mean pairwise cosine "
                f"{ev['cosine_spread']:.3f}) and collapsed at the next reading, step {since} "
                f"({ev['cosine_collapsed']:.3f}), for the rest of the run ({ev['cosine_end']:.3f} at the end); between "
                f"them the optimizer step of step "
                f"{at} moved the whole model by {ev['update_to_param']:.3g} of its weights' norm (over "
                f"{UPDATE_RATIO_HIGH:g}, 10-100x a healthy peak): that step rewrote the layers, and the loss stays at "
                f"{mean:.4f} vs ln(B) = {ln_b:.4f}.", ev,
                "Lower the learning rate (an lr tuned for another optimizer: Adam's is ~1e-3 to 1e-4, SGD's larger; "
                "Adadelta's 1.0 is no SGD lr), or warm it up; diagnose ablate tests lr_down.", name)]
        return []

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        # the step is a fact once measured; the collapse it left must hold over PERSIST_MIN_OBS readings (a
        # contraction a run spreads out of again is no collapse)
        return finding.evidence["readings_collapsed"] >= PERSIST_MIN_OBS


class ChanceNotCollapsed(Rule):
    """Loss at chance although the embeddings stay spread out and the weights move normally."""

    topic = "representation"
    emits = (Emit("chance_not_collapsed", ("error",), "misaligned_pairs", 2),)
    needs = (("loss_split", "value"), ("collapse", "effective_rank"), ("gradient_flow.model", "update_to_param"))
    thresholds = {"SPREAD_EFFECTIVE_RANK": SPREAD_EFFECTIVE_RANK, "UPDATE_RATIO_LOW": UPDATE_RATIO_LOW,
                  "UPDATE_RATIO_HIGH": UPDATE_RATIO_HIGH, "CHANCE_REL_TOL": CHANCE_REL_TOL,
                  "SETTLED_CUMULATIVE_UPDATE": SETTLED_CUMULATIVE_UPDATE}

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        # spread-out embeddings at chance is also the initial state: it must persist (rules.persistence)
        return stuck(df, gap_to_chance(df, finding.evidence["component"]).abs() < CHANCE_REL_TOL)

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        mean, ln_b = end_loss(df)
        if not at_chance(mean, ln_b):
            return []
        ranks = {}
        for name in EMBEDDINGS:
            r = finite(series(df, "collapse", name, "effective_rank"))
            if r.empty:
                return []
            ranks[name] = float(r.iloc[-1])
        peak = peak_model_update(df)
        layer_up = finite(select(df, "gradient_flow.layer", "update_to_param")["value"])
        layer_peak = float(layer_up.max()) if len(layer_up) else float("nan")
        if (min(ranks.values()) < SPREAD_EFFECTIVE_RANK or not (UPDATE_RATIO_LOW <= peak)
                or layer_peak > UPDATE_RATIO_HIGH):
            return []
        if ranking_learned(df, ln_b):  # the logits order the pairs well: they do share signal (see logits_flat)
            return []
        comp = primary_component(df)
        values = series(df, "loss_split", comp, "value")
        ev = {"component": comp, "loss_clip_mean": rnd(mean), "chance_ln_B": rnd(ln_b),
              "window_steps": span(window(values)),
              "effective_rank_end": {k: rnd(v, 2) for k, v in ranks.items()}, "rank_threshold": SPREAD_EFFECTIVE_RANK,
              "peak_update_to_param": rnd(peak, 6), "peak_layer_update_to_param": rnd(layer_peak, 6)}
        return [Finding(
            "chance_not_collapsed", "error", ctx.name,
            f"{comp} is at chance ({mean:.4f} vs ln(B) = {ln_b:.4f}) although both embeddings stay spread out "
            f"(effective rank image {ranks['image']:.1f}, text {ranks['text']:.1f}) and the optimizer moves the "
            "weights at "
            f"a normal rate (peak update/param {peak:.2g}): the model tells images apart and captions apart but cannot "
            "match them. The pairs carry no shared signal: misaligned image/caption pairs (shuffled or off-by-one "
            "indices) or features that do not describe the same item.", ev,
            "Check the pairing in the data pipeline: print a few (image id, caption) pairs from a training batch; "
            "check the held-out split's pairs too.")]
