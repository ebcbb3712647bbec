"""Streaming reduction of raw log points into the log frame (`LogBuilder`), and the flattening of nested
JSON records the JSON readers share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..logframe import COLUMNS, ParsedLog

# Deeper nesting than this in a JSON record is not a metric any logger writes; it is skipped, noted.
MAX_DEPTH = 8


def flatten_record(obj: dict, prefix: str = "", depth: int = 0, skipped: list | None = None) -> dict:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            if depth >= MAX_DEPTH:
                if skipped is not None:
                    skipped.append(key)
                continue
            out.update(flatten_record(v, key, depth + 1, skipped))
        else:
            out[key] = v
    return out


# --- streaming reduction -----------------------------------------------------------------------------
# Every series (run, split, metric) keeps at most MAX_POINTS step buckets. Steps are bucketed by
# step // width with one width for the whole log, doubled (adjacent buckets merged) whenever a series
# would exceed MAX_POINTS. A bucket keeps the mean of its finite values, so: metrics logged at the same
# steps stay aligned (same buckets), linear relations between columns (total = sum w_i L_i, identical
# components) hold exactly on the means, and the standard error of a window mean computed from bucket
# means equals the one from the raw points (each bucket mean carries 1/m of the per-point variance).
# 2048 points resolve a trend to 0.05% of the run; memory is O(series x MAX_POINTS), not O(file).
MAX_POINTS = 2048
_KEYS = ["run", "split", "metric", "key"]


class LogBuilder:
    def __init__(self, fmt: str, max_points: int = MAX_POINTS):
        self.fmt, self.max_points, self.width = fmt, max_points, 1
        self.acc: pd.DataFrame | None = None
        self.notes: list[str] = []
        self.raw_points = 0
        self._noted: set[str] = set()
        self.run_order: dict[str, int] = {}

    def note(self, text: str, key: str | None = None) -> None:
        if key is None or key not in self._noted:
            self._noted.add(key or text)
            self.notes.append(text)

    def add_long(self, run, split, metric, step, value, line) -> None:
        """Append raw points (arrays, or scalars broadcast to the length of `value`)."""
        value = np.asarray(value, dtype=float)
        if value.size == 0:
            return
        n = value.size
        step = np.asarray(step, dtype=np.int64) if np.ndim(step) else np.full(n, step, dtype=np.int64)
        line = np.asarray(line, dtype=np.int64) if np.ndim(line) else np.full(n, line, dtype=np.int64)
        self.raw_points += n
        labels = [np.asarray(x, dtype=object) if np.ndim(x) else x for x in (run, split, metric)]
        if not any(np.ndim(x) for x in labels):
            self._merge(self._series_chunk(*labels, step, value, line))
            return
        ids = pd.DataFrame({k: (x if np.ndim(x) else np.full(n, x,
                                                             dtype=object)) for k, x in zip(("r", "s", "m"), labels)})
        parts = [self._series_chunk(r, sp, m, step[idx], value[idx], line[idx])
                 for (r, sp, m), idx in ids.groupby(["r", "s", "m"], sort=False).indices.items()]
        self._merge(pd.concat(parts, ignore_index=True))

    def _series_chunk(self, run, split, metric, step, value, line) -> pd.DataFrame:
        """One series' raw points pre-aggregated into its step buckets (numeric keys only: fast)."""
        run = str(run)
        self.run_order.setdefault(run, len(self.run_order))
        finite = np.isfinite(value)
        chunk = pd.DataFrame({"key": step // self.width, "step": step, "line": line,
                              "fsum": np.where(finite, value, 0.0), "fcount": finite.astype(np.int64),
                              "nf": (~finite).astype(np.int64), "nfinf": np.where(np.isinf(value), value, np.nan)})
        with np.errstate(over="ignore", invalid="ignore"):
            chunk = chunk.groupby("key", sort=False, as_index=False).agg(
                step=("step", "max"), line=("line", "max"), fsum=("fsum", "sum"), fcount=("fcount", "sum"),
                nf=("nf", "sum"), nfinf=("nfinf", "last"))
        return chunk.assign(run=run, split=str(split), metric=str(metric))

    def _merge(self, chunk: pd.DataFrame) -> None:
        frame = chunk if self.acc is None else pd.concat([self.acc, chunk], ignore_index=True)
        frame = self._group(frame)
        while frame.groupby(["run", "split", "metric"], sort=False).size().max() > self.max_points:
            self.width *= 2
            frame = self._group(frame.assign(key=frame["key"] // 2))
        self.acc = frame

    @staticmethod
    def _group(frame: pd.DataFrame) -> pd.DataFrame:
        with np.errstate(over="ignore", invalid="ignore"):
            return frame.groupby(_KEYS, sort=False, as_index=False).agg(
                step=("step", "max"), line=("line", "max"), fsum=("fsum", "sum"), fcount=("fcount", "sum"),
                nf=("nf", "sum"), nfinf=("nfinf", "last"))

    def result(self) -> ParsedLog:
        if self.acc is None or self.acc.empty:
            return ParsedLog(self.fmt, pd.DataFrame(columns=COLUMNS), self.notes, self.raw_points, self.width)
        a = self.acc
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            mean = a["fsum"] / a["fcount"].where(a["fcount"] > 0)
        nonfinite = a["nfinf"].where(a["nfinf"].notna(), np.nan)
        value = mean.where(a["fcount"] > 0, nonfinite)
        frame = pd.DataFrame({"run": a["run"].astype(str), "split": a["split"].astype(str),
                              "step": a["step"].astype(int),
                              "metric": a["metric"].astype(str), "value": value.astype(float),
                              "line": a["line"].astype(int),
                              "n": (a["fcount"] + a["nf"]).astype(int), "nonfinite": a["nf"].astype(int)})
        frame = (frame.assign(_o=frame["run"].map(self.run_order)).sort_values(["_o", "split", "metric", "step"],
                                                                               kind="stable")
                 .drop(columns="_o").reset_index(drop=True))
        if self.width > 1:
            self.note(f"long series reduced to at most {self.max_points} points each: steps averaged in buckets of "
                      f"{self.width} steps ({self.raw_points} logged values)")
        return ParsedLog(self.fmt, frame, self.notes, self.raw_points, self.width)
