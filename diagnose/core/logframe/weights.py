"""Loss weights from a log: least squares for total = sum_i w_i L_i over the logged rows, snapped to round values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ConfigError
from . import loss_components, metric_label, rounded, wide_frame

# total = sum(w_i L_i) must hold to the rounding of the printed numbers: each of the (1 + n) values
# printed with 4 decimals is off by up to 5e-5, so 5e-4 covers any weights up to ~8; float logs
# (CSV, JSON, TensorBoard) are far tighter and get the relative term (float32 precision x 10).
WEIGHT_ABS_TOL, WEIGHT_REL_TOL = 5e-4, 1e-6
# Loss weights in configs are round numbers (0.25, 0.5, 1.0, 0.1); the least-squares solution is
# snapped to the coarsest of these grids that still reproduces every logged total.
WEIGHT_GRIDS = (0.25, 0.05, 0.01)


def _rows(df: pd.DataFrame, comps: list[str]) -> pd.DataFrame:
    wide = wide_frame(df)
    if "total" not in wide:
        return pd.DataFrame()
    cols = [c for c in comps if c in wide]
    if not cols:
        return pd.DataFrame()
    # only rows where the total and every component are finite: a NaN/inf row (reported by
    # loss_nonfinite) says nothing about the weights, and one inf or 1e400 makes the SVD of lstsq fail
    finite = np.isfinite(wide[["total", *cols]].to_numpy(float)).all(axis=1)
    return wide[finite]


def _tol(y: np.ndarray) -> np.ndarray:
    return WEIGHT_ABS_TOL + WEIGHT_REL_TOL * np.abs(y)


def _snap(w: np.ndarray, A: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float | None]:
    for grid in WEIGHT_GRIDS:
        ws = np.round(w / grid) * grid
        if np.all(np.abs(A @ ws - y) <= _tol(y)):
            return ws, grid
    return w, None


def format_weights(weights: dict[str, float]) -> str:
    return ", ".join(f"{metric_label(k)} {v:g}" for k, v in weights.items())


def solve_weights(frames: dict[str, pd.DataFrame]) -> dict | None:
    """Least squares for total = sum_i w_i L_i over every logged row of every run (assuming the runs
    share their loss weights), snapped to round values when those reproduce every row."""
    comps = sorted({c for df in frames.values() for c in loss_components(df)})
    parts = []
    for run, df in frames.items():
        rows = _rows(df, comps)
        if len(rows) and all(c in rows for c in comps):
            parts.append(rows.assign(run=run))
    if not parts or not comps:
        return None
    rows = pd.concat(parts, ignore_index=True)
    A, y = rows[comps].to_numpy(float), rows["total"].to_numpy(float)
    rank = int(np.linalg.matrix_rank(A, tol=1e-6 * max(1.0, float(np.abs(A).max()))))
    w, *_ = np.linalg.lstsq(A, y, rcond=None)
    result = {"components": comps, "rows": len(rows), "runs": sorted(rows["run"].unique()), "rank": rank,
              "least_squares": {c: rounded(float(x)) for c, x in zip(comps, w)}}
    if rank < len(comps):
        result["identified"] = False
        # with identical columns only the sum of their weights is determined
        result["weight_sum"] = rounded(float(np.sum(w)))
        return result
    ws, grid = _snap(w, A, y)
    resid = A @ ws - y
    result.update(identified=True, weights={c: rounded(float(x), 6) for c, x in zip(comps, ws)}, grid=grid,
                  max_residual=float(np.abs(resid).max()), fits=bool(np.all(np.abs(resid) <= _tol(y))))
    return result


def check_weights(frames: dict[str, pd.DataFrame], weights: dict[str, float]) -> dict:
    comps_logged = sorted({c for df in frames.values() for c in loss_components(df)})
    unknown = [k for k in weights if k not in comps_logged]
    if unknown:
        raise ConfigError(f"--weights: {', '.join(k.removeprefix('loss_') for k in unknown)} not among the logged "
                          f"components ({', '.join(c.removeprefix('loss_') for c in comps_logged) or 'none'})")
    comps = list(weights)
    per_run = {}
    for run, df in frames.items():
        rows = _rows(df, comps)
        if not len(rows):
            continue
        A, y = rows[comps].to_numpy(float), rows["total"].to_numpy(float)
        resid = A @ np.array([weights[c] for c in comps]) - y
        bad = np.abs(resid) > _tol(y)
        worst = int(np.argmax(np.abs(resid)))
        weighted = A @ np.array([weights[c] for c in comps])
        per_run[run] = {"rows": len(rows), "max_residual": rounded(float(np.abs(resid).max()), 6),
                        "fits": not bool(bad.any()),
                        "worst": {"split": rows["split"].iloc[worst], "step": int(rows["step"].iloc[worst]),
                                  "total": float(y[worst]), "weighted_sum": rounded(float(weighted[worst]), 6)}}
    return {"weights": weights, "per_run": per_run}


