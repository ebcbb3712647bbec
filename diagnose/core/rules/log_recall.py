"""Logged retrieval recall against random ranking, for the log rules (`diagnose.core.rules.logs`):
judged against the evaluation set size when it is known, else by R@K growing linearly in K."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..findings import Finding
from ..logframe import final_step, final_values, rounded

# Random ranking over N candidates gives R@K = K/N, linear in K. The implied N = K/R@K agreeing
# within 1.5x across K (the seed: 3333, 2941, 2941 from recalls printed with 2 decimals of a
# percent) is that signature; a model that ranks at all has R@K growing sublinearly in K (a 30% R@1
# model with 75% R@10 implies N = 3.3 vs 13.3, a 4x spread).
RANDOM_RECALL_SPREAD = 1.5
# ...and only while K/N is small (R@K below 50%); near saturation every model's R@K flattens out.
RANDOM_RECALL_MAX = 0.5

# A single recall judged against the evaluation set size N (`--eval-size`, or a logged eval_size
# column): under random ranking each of the N queries finds its positive in the top K with probability
# K/N, so the hit count is Binomial(N, K/N) with mean K and sd sqrt(K (1 - K/N)). A logged R@K whose
# hit count R@K x N stays within K + RECALL_Z sd is indistinguishable from guessing (one-sided: a recall
# below chance is no evidence of learning either). The seed's complaint: R@1 = 0.00% on 512 pairs is
# 0 hits against an expected 1.
RECALL_Z = 3.0


def eval_size(df: pd.DataFrame) -> int | None:
    sizes = df.loc[df["metric"] == "eval_size", "value"]
    sizes = sizes[np.isfinite(sizes) & (sizes >= 2)]
    return int(round(float(sizes.iloc[-1]))) if len(sizes) else None


def recall_vs_size(df: pd.DataFrame) -> list[dict]:
    n = eval_size(df)
    if n is None:
        return []
    out = []
    for split, values in final_values(df).items():
        for m, v in sorted(values.items()):
            if not m.startswith("r@") or not math.isfinite(v):
                continue
            k = int(m[2:])
            if k >= n:
                continue
            p = k / n
            bound = k + RECALL_Z * math.sqrt(k * (1 - p))
            out.append({"split": split, "metric": m, "value": v, "eval_size": n, "chance": rounded(p, 6),
                        "hits": rounded(v * n, 2),
                        "expected_hits": k, "max_random_hits": rounded(bound, 2), "random": v * n <= bound,
                        "step": final_step(df, split)})
    return out


def recall_findings(run: str, df: pd.DataFrame) -> list[Finding]:
    sized = recall_vs_size(df)
    if sized:
        return _recall_sized(run, sized)
    final = final_values(df)
    out = []
    for split, values in final.items():
        recalls = sorted(((int(m[2:]), v) for m, v in values.items() if m.startswith("r@")), key=lambda kv: kv[0])
        if len(recalls) < 2 or any(v <= 0 or v >= RANDOM_RECALL_MAX for _, v in recalls):
            continue
        implied = {k: k / v for k, v in recalls}
        spread = max(implied.values()) / min(implied.values())
        if spread > RANDOM_RECALL_SPREAD:
            continue
        n = float(np.exp(np.mean(np.log(list(implied.values())))))
        shown = ", ".join(f"R@{k} {v:.2%} -> N ≈ {k / v:.0f}" for k, v in recalls)
        out.append(Finding(
            "recall_at_random", "error", run,
            f"{run}: retrieval recall grows linearly in K, as random ranking does (R@K = K/N): {shown}. That is random "
            f"ranking over a pool of about {n:.0f} candidates (presumably the evaluation set size); the embeddings "
            "carry no "
            "retrieval signal.",
            {"split": split, "step": final_step(df, split), "recall": {f"r@{k}": v for k, v in recalls},
             "implied_pool": {f"r@{k}": rounded(N, 1) for k, N in implied.items()}, "pool_estimate": round(n),
             "spread": rounded(spread, 3), "max_spread": RANDOM_RECALL_SPREAD},
            "Compare with chance K/N for your evaluation set size; diagnose the loss first.", split))
    return out


def _recall_sized(run: str, sized: list[dict]) -> list[Finding]:
    out = []
    for split in dict.fromkeys(r["split"] for r in sized):
        rows = [r for r in sized if r["split"] == split]
        if not all(r["random"] for r in rows):
            continue
        n = rows[0]["eval_size"]
        shown = ", ".join(f"{r['metric'].upper()} {r['value']:.2%} ({r['hits']:g} hits, chance {r['expected_hits']}, "
                          f"random ranking gives at most {r['max_random_hits']:g})" for r in rows)
        out.append(Finding(
            "recall_at_random", "error", run,
            f"{run}: {split} retrieval on {n} pairs is what random ranking gives (R@K = K/N = "
            f"{rows[0]['chance']:.2%} for "
            f"K=1): {shown}. The embeddings carry no retrieval signal.",
            {"split": split, "eval_size": n, "recall": rows, "z": RECALL_Z,
             "test": "hits = R@K x N against Binomial(N, K/N): random while hits <= K + z sqrt(K (1 - K/N))"},
            "Diagnose the loss first: a loss at ln(candidates) and recall at K/N are the same failure.", split))
    return out
