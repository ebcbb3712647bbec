"""The one long frame every log format is read into (run, split, step, metric, value, line), with
canonical metric names: `total` (the logged total beside components), `loss_<component>` (a lone loss is
`loss_contrastive`), `r@K` (a fraction), plus `lr` and
`logit_scale` when logged. The log readers (`diagnose.core.logs`) produce it; the log rules
(`diagnose.core.rules.logs`) read it through the helpers below."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

COLUMNS = ["run", "split", "step", "metric", "value", "line", "n", "nonfinite"]


@dataclass
class ParsedLog:
    """`frame`: one row per (run, split, metric, step bucket): `value` the mean of the finite values
    logged in the bucket (the non-finite value when none is finite), `n` the raw points in it,
    `nonfinite` how many of them were NaN/inf. Buckets are single steps until a series passes
    MAX_POINTS (see `LogBuilder`)."""

    format: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    raw_points: int = 0
    bucket_steps: int = 1

    @property
    def runs(self) -> list[str]:
        return list(dict.fromkeys(self.frame["run"]))


def rounded(x: float, digits: int = 4) -> float:
    return float(round(x, digits)) if math.isfinite(x) else x


def metric_label(metric: str) -> str:
    """A metric as messages show it: a loss by its one name (`total`, `loss_<name>`, as `diagnose.watch`
    records it), a recall as R@K."""
    return metric.upper() if metric.startswith("r@") else metric


def loss_components(df: pd.DataFrame) -> list[str]:
    return sorted(m for m in df["metric"].unique() if m.startswith("loss_"))


def wide_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, step) with a column per metric (the last value when logged twice). Every metric
    of `df` gets its column, also one that is NaN throughout (pivot_table drops those)."""
    wide = df.pivot_table(index=["split", "step"], columns="metric", values="value", aggfunc="last")
    return wide.reindex(columns=sorted(set(df["metric"]))).reset_index()


def final_values(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (split, metric), g in df.sort_values(["step", "line"]).groupby(["split", "metric"], sort=False):
        out.setdefault(split, {})[metric] = float(g["value"].iloc[-1])
    return out


def final_step(df: pd.DataFrame, split: str) -> int | None:
    d = df[df["split"] == split]
    return int(d["step"].max()) if len(d) else None
