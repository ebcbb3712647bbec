"""The one long frame every log format is read into (run, split, step, metric, value, line), with
canonical metric names: `loss` (the logged total), `loss_<component>`, `r@K` (a fraction), plus `lr` and
`logit_scale` when logged. Readers produce it; the log rules (`diagnose.rules.logs`) read it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from reference_models.config import ConfigError

# --- canonical metric names ------------------------------------------------------------------------
SPLITS = {"train": "train", "training": "train", "tr": "train", "val": "val", "valid": "val",
          "validation": "val", "eval": "val", "test": "val", "dev": "val"}
TOTAL_NAMES = {"loss", "total", "total_loss", "loss_total", "totalloss", "objective"}
STEP_COLUMNS = ("step", "global_step", "iteration", "iter", "it", "epoch")
RUN_COLUMNS = ("run", "run_name", "name", "model", "experiment")
SPLIT_COLUMNS = ("split", "phase", "mode", "stage")
_NUM = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"


def _split_prefix(name: str) -> tuple[str | None, str]:
    """'train/loss_clip' -> ('train', 'loss_clip'); 'loss/val' -> ('val', 'loss')."""
    for sep in ("/", ".", "_", "-", " "):
        head, _, rest = name.partition(sep)
        if rest and head in SPLITS:
            return SPLITS[head], rest
        stem, _, tail = name.rpartition(sep)
        if stem and tail in SPLITS:
            return SPLITS[tail], stem
    return None, name


def canonical_metric(name: str) -> tuple[str | None, str | None]:
    """(split or None, canonical metric or None when the column is not a loss or a recall)."""
    n = re.sub(r"\s+", "_", str(name).strip().lower())
    split, n = _split_prefix(n)
    n = n.replace("/", "_").replace(".", "_").replace("-", "_")
    if n in TOTAL_NAMES:
        return split, "loss"
    m = re.fullmatch(r"(?:retrieval_)?(?:r|recall)(?:@|_at_|_@_|_|)(\d+)", n.replace("@", "@"))
    if m:
        return split, f"r@{int(m.group(1))}"
    m = re.fullmatch(r"loss_(.+)", n) or re.fullmatch(r"(.+?)_loss", n) or re.fullmatch(r"losses_(.+)", n)
    if m and m.group(1) not in TOTAL_NAMES:
        return split, "loss_" + m.group(1).strip("_")
    return split, None



@dataclass
class ParsedLog:
    format: str
    frame: pd.DataFrame  # run, split, step, metric, value
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[str]:
        return list(dict.fromkeys(self.frame["run"]))


def _flatten(obj: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _from_table(df: pd.DataFrame, fmt: str, default_run: str) -> ParsedLog:
    """Wide rows (one per logged step) -> long frame. Recalls logged in percent (any value > 1)
    are converted to fractions."""
    cols = {c: str(c).strip().lower() for c in df.columns}
    by_lower = {v: k for k, v in cols.items()}
    run_col = next((by_lower[c] for c in RUN_COLUMNS if c in by_lower), None)
    split_col = next((by_lower[c] for c in SPLIT_COLUMNS if c in by_lower), None)
    step_col = next((by_lower[c] for c in STEP_COLUMNS if c in by_lower), None)
    notes, rows = [], []
    metric_cols = {}
    for c in df.columns:
        if c in (run_col, split_col, step_col):
            continue
        split, metric = canonical_metric(c)
        if metric is None:
            continue
        values = pd.to_numeric(df[c], errors="coerce")
        if values.notna().sum() == 0:
            continue
        if metric.startswith("r@") and (values > 1).any():
            values = values / 100.0
            notes.append(f"column '{c}': values above 1 read as percentages")
        metric_cols[c] = (split, metric, values)
    if not metric_cols:
        raise ConfigError(f"no loss or recall columns found in the {fmt} log (columns: {', '.join(map(str, df.columns[:12]))})")
    steps = pd.to_numeric(df[step_col], errors="coerce") if step_col is not None else pd.Series(range(len(df)), index=df.index)
    for c, (split, metric, values) in metric_cols.items():
        for i in df.index[values.notna()]:
            row_split = split
            if split_col is not None and pd.notna(df.at[i, split_col]):
                row_split = SPLITS.get(str(df.at[i, split_col]).strip().lower(), str(df.at[i, split_col]))
            rows.append({"run": str(df.at[i, run_col]) if run_col is not None else default_run,
                         "split": row_split or "train",
                         "step": int(steps[i]) if pd.notna(steps[i]) else int(i),
                         "metric": metric, "value": float(values[i]), "line": int(i) + 2})
    frame = pd.DataFrame(rows, columns=["run", "split", "step", "metric", "value", "line"])
    return ParsedLog(fmt, frame, notes)



def _r(x: float, digits: int = 4) -> float:
    return float(round(x, digits)) if math.isfinite(x) else x


def _label(metric: str) -> str:
    return "total" if metric == "loss" else metric.removeprefix("loss_").upper() if metric.startswith("loss_") else metric.upper()


def _components(df: pd.DataFrame) -> list[str]:
    return sorted(m for m in df["metric"].unique() if m.startswith("loss_"))


def _wide(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, step) with a column per metric (the last value when logged twice)."""
    return df.pivot_table(index=["split", "step"], columns="metric", values="value", aggfunc="last").reset_index()


def _final(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (split, metric), g in df.sort_values(["step", "line"]).groupby(["split", "metric"], sort=False):
        out.setdefault(split, {})[metric] = float(g["value"].iloc[-1])
    return out


def _final_step(df: pd.DataFrame, split: str) -> int | None:
    d = df[df["split"] == split]
    return int(d["step"].max()) if len(d) else None


