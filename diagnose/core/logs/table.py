"""Wide tables (CSV, JSON lines, W&B / Lightning / HF rows) into the log frame: which columns are read
and what they mean (`TableMapper`)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .builder import LogBuilder
from .names import RUN_COLUMNS, SPLIT_COLUMNS, SPLITS, STEP_COLUMNS, canonical_column

# --- wide tables (CSV, JSON lines, W&B / Lightning / HF rows) -----------------------------------------


_NAN_TEXT = {"nan", "-nan", "+nan"}


def _numeric(raw: pd.Series, column: str, builder: LogBuilder, line0: int) -> pd.Series:
    """Numbers of a column chunk; empty cells are missing (sparse rows), 'nan'/'inf' are values,
    other text is skipped and noted (the first one named)."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return raw.astype(float)
    present = raw.notna()
    values = pd.to_numeric(raw.where(present), errors="coerce") if len(raw) else raw.astype(float)
    text = raw.astype(str).str.strip().str.lower()
    bad = present & values.isna() & ~text.isin(_NAN_TEXT)
    if bad.any():
        i = bad.idxmax()
        builder.note(f"column '{column}': non-numeric values skipped (first at row {int(i) + line0}: "
                     f"{str(raw[i])[:40]!r})", key=f"text:{column}")
        values = values.mask(bad)
    return values.astype(float)


# W&B's chart export ("Export CSV" of a panel): a column "<run> - <metric>" per run, with
# "<run> - <metric>__MIN"/"__MAX" envelopes of the smoothed line (not read).
_WANDB_CHART = re.compile(r"(.+?) - (.+)")


def column_of_run(c: str) -> tuple[str | None, tuple[str | None, str | None, int]]:
    m = _WANDB_CHART.fullmatch(c)
    if m:
        name = m.group(2).strip()
        if name.endswith(("__MIN", "__MAX")):
            return None, (None, None, 0)
        if canonical_column(name)[1] is not None:
            return m.group(1).strip(), canonical_column(name)
    return None, canonical_column(c)


def _target(metric: str) -> str:
    """The metric a column is stored as (a temperature is stored as its inverse, the logit scale)."""
    return "logit_scale" if metric in ("temperature", "log_logit_scale") else metric


class TableMapper:
    """Which columns of a wide table are read and what they mean; column collisions resolved once."""

    def __init__(self, default_run: str):
        self.default_run = default_run
        self.chosen: dict[tuple, tuple[int, str]] = {}  # (run or None, split, metric) -> (rank, column)
        self.seen: dict[str, tuple] = {}
        self.text_only: dict[str, str] = {}  # recognised column -> first text value, while no number seen
        self.numeric: set[str] = set()

    def special(self, cols: list[str]) -> tuple[str | None, str | None, str | None]:
        by_lower = {str(c).strip().lower(): c for c in cols}

        def pick(names):
            return next((by_lower[c] for c in names if c in by_lower), None)

        return pick(RUN_COLUMNS), pick(SPLIT_COLUMNS), pick(STEP_COLUMNS)

    def recognised(self, cols: list[str], builder: LogBuilder) -> dict[str, tuple[str | None, str, str | None]]:
        specials = set(self.special(cols))
        out = {}
        for c in cols:
            if c in specials:
                continue
            if c not in self.seen:
                self.seen[c] = column_of_run(str(c))
            run_of, (split, metric, rank) = self.seen[c]
            if metric is None:
                continue
            key = (run_of, split, metric)
            prev = self.chosen.get(key)
            if prev is None or rank < prev[0]:
                if prev is not None:
                    builder.note(f"column '{prev[1]}' not used: '{c}' gives the same {metric}", key=f"dup:{prev[1]}")
                self.chosen[key] = (rank, c)
            elif prev[1] != c:
                builder.note(f"column '{c}' not used: '{prev[1]}' gives the same {metric}", key=f"dup:{c}")
                continue
            out[c] = (split, metric, run_of)
        return out

    def add(self, df: pd.DataFrame, builder: LogBuilder, line0: int) -> None:
        """One chunk of rows; `line0` is the file line of the chunk's first row (index 0)."""
        cols = list(df.columns)
        run_col, split_col, step_col = self.special(cols)
        wanted = self.recognised(cols, builder)
        df = df.reset_index(drop=True)
        lines = np.arange(len(df), dtype=np.int64) + line0
        steps = self._steps(df, step_col, lines - line0 + builder.raw_points, lines - 2)
        runs = df[run_col].astype(str) if run_col is not None else self.default_run
        row_split = None
        if split_col is not None:
            row_split = df[split_col].astype(str).str.strip().str.lower().map(lambda s: SPLITS.get(s, s))
        index = builder.index(steps, lines)  # shared by the columns logged on every row
        for c, (split, metric, run_of) in wanted.items():
            if self.chosen.get((run_of, split, metric), (0, c))[1] != c:
                continue
            sp = split or ("all" if metric in ("lr", "logit_scale", "eval_size", "temperature",
                                               "log_logit_scale") else "train")
            run = run_of if run_of is not None else runs if run_col is None else None
            if run is not None and row_split is None and not builder.admit(run, sp, _target(metric)):
                builder.raw_points += int(df[c].notna().sum())  # read, counted, not analysed
                continue
            values, ok = self._values(df[c], c, builder, line0)
            if values is None:
                continue
            dense = ok is None
            v = values if dense else values[ok]
            if metric == "temperature":
                with np.errstate(divide="ignore"):
                    v, metric = 1.0 / v, "logit_scale"
            elif metric == "log_logit_scale":
                with np.errstate(over="ignore"):
                    v, metric = np.exp(v), "logit_scale"
            if metric.startswith("r@") and np.nanmax(np.where(np.isfinite(v), v, np.nan), initial=0) > 1:
                v = v / 100.0
                builder.note(f"column '{c}': values above 1 read as percentages", key=f"pct:{c}")
            if row_split is None and run is not None:
                builder.add_series(run, sp, metric, v, index if dense else index.subset(ok))
                continue
            sel = slice(None) if dense else ok
            if row_split is not None:
                rs = row_split[sel]
                sp = rs.where(rs.notna() & (rs != "nan"), sp).to_numpy(object)
            run = run if run is not None else runs[sel].to_numpy(object)
            builder.add_long(run, sp, metric, steps[sel], v, lines[sel])

    @staticmethod
    def _steps(df: pd.DataFrame, step_col: str | None, fallback: np.ndarray, no_column: np.ndarray) -> np.ndarray:
        """The step of each row: the step column where it holds an integer that fits, else `fallback`."""
        if step_col is None:
            return no_column
        raw = df[step_col]
        if raw.dtype == np.int64 and (raw.empty or -(2**62) < raw.min() and raw.max() < 2**62):
            return raw.to_numpy(np.int64)
        steps = pd.to_numeric(raw, errors="coerce").to_numpy(float)
        good = np.isfinite(steps) & (np.abs(steps) < 2**62)
        return np.where(good, steps, fallback).astype(np.int64)

    def _values(self, raw: pd.Series, c: str, builder: LogBuilder, line0: int):
        """(float values, mask of the logged ones or None when every row is logged), or (None, None)
        when the chunk holds no number for the column."""
        if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
            values = raw.to_numpy(float)  # 'nan' text keeps a column object: NaN here is an empty cell
            ok = ~np.isnan(values)
        else:
            values = _numeric(raw, c, builder, line0).to_numpy(float)
            ok = ~np.isnan(values) | (raw.notna() & raw.astype(str).str.strip().str.lower().isin(_NAN_TEXT)).to_numpy()
        if ok.all():
            if len(ok):
                self.numeric.add(c)
                self.text_only.pop(c, None)
            return (values, None) if len(ok) else (None, None)
        if not ok.any():
            if raw.notna().any() and c not in self.numeric:
                self.text_only.setdefault(c, str(raw[raw.notna()].iloc[0])[:40])
            return None, None
        self.numeric.add(c)
        self.text_only.pop(c, None)
        return values, ok

    def check(self, path, fmt: str) -> None:
        if self.text_only:
            c, v = next(iter(self.text_only.items()))
            raise ConfigError(f"{path}: column '{c}' holds text ({v!r}), not numbers; expected numeric {fmt} values")
        if not self.chosen:
            raise ConfigError(f"{path}: no loss or recall columns found in the {fmt} log "
                              f"(columns: {', '.join(map(str, list(self.seen)[:12]))})")
