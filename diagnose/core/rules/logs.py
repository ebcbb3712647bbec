"""Rules on a training log (`diagnose logs`): losses at ln(candidates), flat or rising losses, identical
components, the loss weights behind the logged total, recall at random (measured in `log_recall`),
non-finite values. They read the long log frame of `diagnose.core.logframe`, one run at a time (the
weights rule reads all runs together)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..definitions import CHANCE_REL_TOL, end_start
from ..findings import Finding
from ..logframe import final_step, final_values, loss_components, metric_label, rounded, wide_frame
from ..logframe.weights import check_weights, format_weights, solve_weights
from ..logs.names import TOTAL
from .base import EXP_SAFE, Emit, Rule, RunContext
from .log_recall import RANDOM_RECALL_MAX, RANDOM_RECALL_SPREAD, RECALL_Z, recall_findings, recall_vs_size
from .loss_logging import IDENTICAL_ATOL

# A contrastive (InfoNCE) loss at uniform logits is ln(N) for N candidates per row. The logged loss is
# judged by its end-of-run mean (`diagnose.core.definitions.end_start`), and "at ln N" means within
#     tol = CHANCE_REL_TOL x ln N  +  CHANCE_Z x SE,   SE = sigma / sqrt(n),   capped at CHANCE_TOL_MAX,
# where n is the number of logged points in the end window and sigma their point-to-point noise,
# estimated from successive differences (sigma^2 = mean(diff^2) / 2, insensitive to a slow drift).
# The first term is the project's definition of "at chance" (definitions.CHANCE_REL_TOL: a model at
# initialisation sits within it); the second is how far a mean of n noisy batch losses can sit from its
# expectation by chance (3 standard errors). A short or noisy log widens the band, a long smooth one
# narrows it to the definition. The band may not exceed CHANCE_TOL_MAX, half the distance between
# adjacent candidate pools (a factor 2 = ln 2 nats apart: batch sizes and world sizes are powers of
# two): a log too short or too noisy for that cannot tell which pool, or whether any, the loss sits at,
# and gives no finding rather than a guess.
CHANCE_Z = 3.0
CHANCE_TOL_MAX = math.log(2) / 2
# exp(loss) is only read as a candidate count when it is at least this large: below 8 candidates a
# "chance" match is a coincidence of any small loss value.
MIN_CANDIDATES = 8
# World sizes tried when the configured batch B does not explain exp(loss): k x B candidates when
# features are gathered across k ranks before the loss (open_clip's gather_with_grad).
WORLD_SIZES = (1, 2, 4, 8, 16, 32, 64)
# Flat loss: the mean over the end of the run (`diagnose.core.definitions`, at most half the logged points)
# within 2% of the mean over as many first points. The seed's perceiver run is flat to the 4th digit
# (6.06 over 10 epochs) while its working direct run fell ~10% (1.24 -> 1.12) over the same span; 2%
# separates the two with margin.
FLAT_REL_DROP = 0.02
MIN_POINTS_FOR_TREND = 3


def chance_tolerance(ln_n: float, sigma: float, n: int) -> float:
    """The at-chance band around ln N in nats for an end-window mean of `n` points with noise `sigma`."""
    se = sigma / math.sqrt(n) if n > 1 and math.isfinite(sigma) else 0.0
    return CHANCE_REL_TOL * ln_n + CHANCE_Z * se


def end_stats(df: pd.DataFrame, split: str, metric: str) -> tuple[float, float, int]:
    """(end-window mean, point-to-point noise sigma, points in the window) of one logged series."""
    s = df[(df["split"] == split) & (df["metric"] == metric)].sort_values("step").drop_duplicates("step", keep="last")
    v = s["value"].to_numpy(float)
    if not len(v):
        return float("nan"), float("nan"), 0
    end = v[end_start(list(s["step"])):]
    with np.errstate(over="ignore", invalid="ignore"):
        sigma = float(np.sqrt(np.mean(np.diff(end) ** 2) / 2)) if len(end) > 1 else float("nan")
        return float(np.mean(end)), sigma, len(end)


def _pool_match(loss: float, batch_size: int | None, sigma: float = float("nan"), n: int = 1
                ) -> tuple[int, int | None, float] | None:
    """(candidate count c, world size k or None, tolerance) with |loss - ln c| <= tolerance, or None."""
    if not math.isfinite(loss) or loss < math.log(MIN_CANDIDATES) - CHANCE_TOL_MAX:
        return None
    if batch_size:
        pools = [(batch_size * k, k) for k in WORLD_SIZES]
    else:
        pools = [(2**p, None) for p in range(3, 21)]
    c, k = min(pools, key=lambda ck: abs(loss - math.log(ck[0])))
    tol = chance_tolerance(math.log(c), sigma, n)
    return (c, k, tol) if abs(loss - math.log(c)) <= tol <= CHANCE_TOL_MAX else None


def _series(df: pd.DataFrame, metric: str) -> pd.Series:
    s = df[df["metric"] == metric].sort_values(["step", "line"])
    return s.drop_duplicates("step", keep="last").set_index("step")["value"]


def _context(df: pd.DataFrame, c: int, evidence: dict) -> str:
    """The logged learning rate, logit scale and held-out recall as evidence for a loss at ln c."""
    msg = ""
    lr = _series(df, "lr")
    if len(lr):
        fin = lr[np.isfinite(lr)]
        evidence["lr"] = {"first": float(lr.iloc[0]), "max": float(fin.max()) if len(fin) else None,
                          "last": float(lr.iloc[-1]), "points": len(lr)}
        if len(fin) and float(fin.abs().max()) == 0.0:
            msg += " The logged learning rate is 0 throughout: no update could move the loss."
        elif len(fin):
            msg += (f" The logged learning rate went up to {float(fin.max()):.3g} (last {float(lr.iloc[-1]):.3g}), "
                    "so the "
                    "optimizer was stepping: the updates did not reach, or could not change, the ranking.")
    scale = _series(df, "logit_scale")
    if len(scale) and math.isfinite(float(scale.iloc[-1])):
        s = float(scale.iloc[-1])
        # Cosine similarities lie in [-1, 1]: with the positive at +1 and every negative at -1 the loss is
        # ln(1 + (c-1) e^{-2s}), the lowest the logit scale s allows even for perfect embeddings.
        floor = math.log1p((c - 1) * math.exp(-2 * s)) if s < 350 else 0.0
        evidence["logit_scale"] = {"last": rounded(s), "loss_floor": rounded(floor), "points": len(scale)}
        msg += (f" The logged logit scale ends at {s:.3g}: the lowest loss it allows is "
                f"ln(1 + {c - 1}·e^(-2·{s:.3g})) = {floor:.3f}")
        if floor >= math.log(c) * (1 - CHANCE_REL_TOL):
            msg += (", itself at chance: the temperature alone keeps the softmax from being confident "
                    "(raise the logit scale).")
        else:
            msg += f", far below ln {c}: the temperature does not explain the loss at chance."
    rec = [f for f in recall_vs_size(df) if f["random"]]
    if rec:
        evidence["recall_at_chance"] = rec
        msg += " Held-out recall agrees: " + ", ".join(
            f"{r['metric'].upper()} {r['value']:.2%} vs chance {r['chance']:.2%} on {r['eval_size']} pairs"
            for r in rec) + "."
    return msg


def _at_chance(run: str, df: pd.DataFrame, batch_size: int | None) -> list[Finding]:
    # over 60 lines: one finding whose message is built up from what the log holds (each matched pool, the
    # total, the batch, the logit scale), in the order a reader needs it
    final = final_values(df)
    comps = loss_components(df)
    metrics = comps or [TOTAL]
    hits, misses = [], []
    for split, values in final.items():
        for m in metrics:
            if m not in values:
                continue
            v, sigma, n = end_stats(df, split, m)
            match = _pool_match(v, batch_size, sigma, n)
            entry = {"split": split, "component": m, "value": rounded(v), "final": values[m], "end_points": n,
                     "noise_sigma": rounded(sigma), "exp": rounded(math.exp(v), 1) if v < EXP_SAFE else None,
                     "step": final_step(df, split)}
            if match:
                entry.update(candidates=match[0], ln_candidates=rounded(math.log(match[0])),
                             tolerance_nats=rounded(match[2]),
                             gap_nats=rounded(v - math.log(match[0])))
                if match[1] is not None:
                    entry["world_size"] = match[1]
                hits.append(entry)
            else:
                misses.append(entry)
    if not hits:
        return []
    pools = sorted({h["candidates"] for h in hits})
    c = pools[-1]
    shown = "; ".join(f"{h['split']} {metric_label(h['component'])} {h['value']:.4f} (mean of the last "
                      f"{h['end_points']} points, "
                      f"{h['gap_nats']:+.3f} nats from ln {h['candidates']}, band ±{h['tolerance_nats']:.3f}) -> exp "
                      f"= {h['exp']}"
                      for h in hits)
    names = sorted({metric_label(h['component']) for h in hits})
    msg = (f"{run}: {' and '.join(names)} {'sit' if len(names) > 1 else 'sits'} at ln N for N ≈ {c} "
           "candidates "
           f"({shown}); ln {c} = {math.log(c):.4f}. A contrastive loss at ln N is what uniform logits give: the model "
           f"ranks the positive no better than guessing among {c} candidates.")
    evidence = {"at_chance": hits, "not_at_chance": misses,
                "tolerance": f"{CHANCE_REL_TOL} x ln N + {CHANCE_Z:g} x sigma/sqrt(n); none when above "
                             f"{CHANCE_TOL_MAX:.3f} nats"}
    total = final.get("train", next(iter(final.values()))).get(TOTAL)
    sum_w_hint = None
    if total is not None and comps:
        sum_w_hint = total / math.log(c)
        evidence["total_over_ln_candidates"] = rounded(sum_w_hint)
        msg += (f" The total {total:.4f} = {sum_w_hint:.4f} x ln {c}: every weighted component at chance "
                f"(sum of the loss weights ≈ {sum_w_hint:.2f}).")
    if batch_size:
        k = max(h.get("world_size", 1) for h in hits)
        evidence.update(batch_size=batch_size, ln_batch=rounded(math.log(batch_size)))
        if k == 1:
            msg += (f" That is the configured batch of {batch_size}: chance is ln {batch_size} = "
                    f"{math.log(batch_size):.4f}.")
        else:
            msg += (f" The configured batch is {batch_size}, so each row is scored against {k} x {batch_size} = {c} "
                    f"candidates: features gathered across {k} ranks before the loss (all_gather), or an effective "
                    f"batch of {c} (e.g. a different batch size than configured, or accumulation that concatenates "
                    f"features). Either way chance is ln {c} = {math.log(c):.4f}, not ln {batch_size} = "
                    f"{math.log(batch_size):.4f}.")
    else:
        msg += f" {c} is a power of two, like a batch size: pass --batch-size to check it against the configured batch."
    msg += _context(df, c, evidence)
    return [Finding("loss_at_chance", "error", run, msg, evidence,
                    "Check that gradients reach the vision tower and that the logits are not uniform "
                    "(temperature, collapsed embeddings); `diagnose gradflow` measures both.", "")]


def trend_metric(df: pd.DataFrame) -> str | None:
    """The loss whose trend is judged: the logged total, or the run's only loss."""
    comps = loss_components(df)
    return TOTAL if (df["metric"] == TOTAL).any() else comps[0] if len(comps) == 1 else None


def _flat(run: str, df: pd.DataFrame) -> list[Finding]:
    out = []
    metric = trend_metric(df)
    for split in ("train", "val"):
        s = (df[(df["split"] == split) & (df["metric"] == metric)].sort_values("step")
             .drop_duplicates("step", keep="last"))
        if len(s) < MIN_POINTS_FOR_TREND:
            continue
        n_end = min(len(s) - end_start(list(s["step"])), len(s) // 2)
        first, last = float(s["value"].iloc[:n_end].mean()), float(s["value"].iloc[-n_end:].mean())
        drop = (first - last) / abs(first) if first else float("nan")
        if math.isfinite(drop) and drop < FLAT_REL_DROP:
            steps = [int(s["step"].iloc[0]), int(s["step"].iloc[-1])]
            rising = drop < -FLAT_REL_DROP
            out.append(Finding(
                "loss_rising" if rising else "loss_flat", "warning", run,
                f"{run}: the {split} {metric} {'rose' if rising else 'did not fall'} over {len(s)} logged points "
                f"(steps {steps[0]}-{steps[1]}): mean of the first {n_end} points {first:.4f}, of the last {n_end} "
                f"{last:.4f} "
                f"({-drop:+.1%}).",
                {"split": split, "metric": metric, "points": len(s), "steps": steps,
                 "first_points_mean": rounded(first), "end_points_mean": rounded(last), "points_compared": n_end,
                 "relative_drop": rounded(drop),
                 "threshold": FLAT_REL_DROP},
                "Compare the loss with ln(candidates): a flat loss at chance means no learning signal reaches the "
                "model.",
                split))
            break  # one flatness finding per run, train first
    return out


def _identical(run: str, df: pd.DataFrame) -> list[Finding]:
    comps = loss_components(df)
    if len(comps) < 2:
        return []
    wide = wide_frame(df)
    out = []
    for i, a in enumerate(comps):
        for b in comps[i + 1:]:
            both = wide[[a, b, "split", "step"]].dropna()
            if both.empty:
                continue
            diff = (both[a] - both[b]).abs()
            if bool((diff <= IDENTICAL_ATOL + 1e-9 * both[a].abs()).all()):
                rows = [{"split": sp, "step": int(st), a: float(x), b: float(y)}
                        for sp, st, x, y in both[["split", "step", a, b]].itertuples(index=False)]
                at = [math.exp(v) for v in both[a] if v < EXP_SAFE]
                note = ""
                if at and all(MIN_CANDIDATES <= x for x in at) and _pool_match(float(both[a].iloc[-1]), None):
                    note = (" Both sit at ln N: at uniform logits every InfoNCE component equals ln N whatever the "
                            "embedding dimension, so identical values are expected at chance and do not by themselves "
                            "prove a logging bug; in a learning run they would (e.g. the same tensor logged under two "
                            "names, or the sampled MRL dimension being the full one).")
                out.append(Finding(
                    "components_identical", "warning", run,
                    f"{run}: {metric_label(a)} and {metric_label(b)} are identical in all {len(both)} logged rows "
                    f"(max |difference| {float(diff.max()):.1e}).{note}",
                    {"components": [a, b], "rows": rows, "max_abs_diff": float(diff.max()),
                     "tolerance": IDENTICAL_ATOL},
                    "Log every component from its own tensor, and the sampled MRL dimension with it.", f"{a}={b}"))
    return out



def _weights(frames: dict[str, pd.DataFrame], given: dict[str, float] | None) -> list[Finding]:
    if given:
        check = check_weights(frames, given)
        out = []
        for run, r in check["per_run"].items():
            if r["fits"]:
                out.append(Finding("loss_weights", "info", run,
                                   f"{run}: the logged total equals "
                                   f"{' + '.join(f'{w:g}·{metric_label(c)}' for c, w in given.items())} "
                                   f"in all {r['rows']} rows (max residual {r['max_residual']:.1e}).",
                                   {"weights": given, **r}))
            else:
                wst = r["worst"]
                out.append(Finding(
                    "loss_weights_mismatch", "warning", run,
                    f"{run}: the logged total is not "
                    f"{' + '.join(f'{w:g}·{metric_label(c)}' for c, w in given.items())}: at "
                    f"{wst['split']} step {wst['step']} the total is {wst['total']:.4f} but the weighted sum is "
                    f"{wst['weighted_sum']:.4f}. Either the weights differ from these, or a logged component is not "
                    "the "
                    "value the total was computed from.",
                    {"weights": given, **r}, "Log each component from the tensor that enters the total."))
        return out
    solved = solve_weights(frames)
    if solved is None:
        return []
    run = ", ".join(solved["runs"])
    if not solved["identified"]:
        return [Finding(
            "loss_weights", "info", run,
            f"The logged components are linearly dependent over the {solved['rows']} logged rows (identical "
            "components), "
            "so only the sum of their weights is determined: "
            f"{' + '.join('w_' + metric_label(c) for c in solved['components'])} "
            f"≈ {solved['weight_sum']:.4f}. Pass --weights to check specific values, or give a log of a run whose "
            "components differ.", solved)]
    w = solved["weights"]
    if solved["fits"]:
        eq = " + ".join(f"{v:g}·{metric_label(c)}" for c, v in w.items() if v != 0)
        unused = [c for c, v in w.items() if v == 0]
        msg = (f"total = {eq} reproduces every logged total ({solved['rows']} rows over {len(solved['runs'])} run(s), "
               f"assuming they share their weights; max residual {solved['max_residual']:.1e}, within the rounding "
               "of the "
               f"printed numbers). Least-squares solution before rounding: {format_weights(solved['least_squares'])}.")
        if unused:
            msg += f" {', '.join(metric_label(c) for c in unused)} is logged but not part of the total."
        return [Finding("loss_weights", "info", run, msg, solved)]
    return [Finding(
        "loss_weights_inconsistent", "warning", run,
        "No single set of weights reproduces the logged totals (least squares "
        f"{format_weights(solved['least_squares'])}, "
        f"max residual {solved['max_residual']:.2e}): the runs use different weights, or a logged component is not "
        "what the total was computed from. Check each run with --weights.", solved)]


# NaN or inf in a logged loss or recall: the run diverged (or the logged value is broken); any statistic
# over it is not a score. Reported once per run with the first step where it appeared.
def _nonfinite(run: str, df: pd.DataFrame) -> list[Finding]:
    bad = df[(df["nonfinite"] > 0) & (df["metric"].str.startswith(("loss", "r@")) | (df["metric"] == TOTAL))]
    if bad.empty:
        return []
    first = bad.sort_values(["step", "line"]).iloc[0]
    total = int(bad["nonfinite"].sum())
    metrics = sorted(bad["metric"].unique())
    where = (f"step {int(first['step'])}" if int(first["n"]) <= 1
             else f"the bucket of {int(first['n'])} logged points ending at step {int(first['step'])}")
    return [Finding(
        "loss_nonfinite", "error", run,
        f"{run}: non-finite values in the log ({total} in {', '.join(metric_label(m) for m in metrics)}); the first in "
        f"{first['split']} {metric_label(first['metric'])} at {where}. NaN or inf losses mean the run diverged; "
        "statistics over "
        "them are not scores.",
        {"metrics": metrics, "count": total, "first_step": int(first["step"]), "first_split": first["split"],
         "first_metric": first["metric"], "first_line": int(first["line"])},
        "Lower the learning rate, clip gradients, and look for log(0) or x/0 in the loss.", "")]


class LogRule(Rule):
    kind = "logs"
    topic = "logs"


class LogAtChance(LogRule):
    """The final logged losses against ln(N) for candidate pools N = B x world size (or powers of two)."""

    emits = (Emit("loss_at_chance", ("error",)),)
    thresholds = {"CHANCE_REL_TOL": CHANCE_REL_TOL, "CHANCE_Z": CHANCE_Z, "CHANCE_TOL_MAX": CHANCE_TOL_MAX,
                  "MIN_CANDIDATES": MIN_CANDIDATES}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        return _at_chance(ctx.name, df, ctx.batch_size)


class LogTrend(LogRule):
    """The logged total loss: flat or rising between the first points and the end of the run."""

    emits = (Emit("loss_flat", ("warning",)), Emit("loss_rising", ("warning",)))
    thresholds = {"FLAT_REL_DROP": FLAT_REL_DROP, "MIN_POINTS_FOR_TREND": MIN_POINTS_FOR_TREND}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        return _flat(ctx.name, df)


class LogIdentical(LogRule):
    """Logged components identical in every row."""

    emits = (Emit("components_identical", ("warning",), "logging_misstates_loss", 1, implicates_at=("error",)),)
    thresholds = {"IDENTICAL_ATOL": IDENTICAL_ATOL}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        return _identical(ctx.name, df)


class LogRecall(LogRule):
    """Recall at random: R@K = K/N against the evaluation set size when known, else R@K linear in K."""

    emits = (Emit("recall_at_random", ("error",)),)
    thresholds = {"RANDOM_RECALL_SPREAD": RANDOM_RECALL_SPREAD, "RANDOM_RECALL_MAX": RANDOM_RECALL_MAX,
                  "RECALL_Z": RECALL_Z}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        return recall_findings(ctx.name, df)


class LogNonfinite(LogRule):
    """NaN or inf in a logged loss or recall."""

    emits = (Emit("loss_nonfinite", ("error",), "nonfinite_divergence", 1),)

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        return _nonfinite(ctx.name, df)


class LogWeights(LogRule):
    """total = sum_i w_i L_i over every run of the log: the weights solved for, or the given ones checked."""

    kind = "log_set"  # reads {run: frame} for all runs at once; ctx.weights holds --weights when given
    emits = (Emit("loss_weights", ("info",)),
             Emit("loss_weights_mismatch", ("warning",), "logging_misstates_loss", 2),
             Emit("loss_weights_inconsistent", ("warning",), "logging_misstates_loss", 2))

    def check(self, frames: dict[str, pd.DataFrame], ctx: RunContext) -> list[Finding]:
        return _weights(frames, ctx.weights or None)
