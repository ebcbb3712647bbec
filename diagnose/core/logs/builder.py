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
# Loss components analysed per run and split: the log rules compare components pairwise (identical
# components, weights solved over all of them), which grows with the square of their number; a log with
# thousands of loss columns (per-class or per-sample losses) is read, the first MAX_LOSS_SERIES analysed
# and the rest named in a note.
MAX_LOSS_SERIES = 32


class StepIndex:
    """The steps (and file lines) of one chunk, bucketed at a width: computed once and shared by every
    column of a table chunk, re-keyed only when the width grows. Logs are written in step order, so the
    keys are nearly always sorted and a bucket is a contiguous run of rows (no sort, no hashing)."""

    def __init__(self, step: np.ndarray, line: np.ndarray):
        self.step, self.line, self.width = step, line, 0
        self.order = self.starts = self.key = self.counts = self.step_max = self.line_max = None

    def at(self, width: int) -> StepIndex:
        if width != self.width:
            self.width = width
            self.order, self.starts, self.key = _segments(self.step // width)
            self.counts = np.diff(np.append(self.starts, self.step.size))
            self.step_max = np.maximum.reduceat(self._sorted(self.step), self.starts)
            self.line_max = np.maximum.reduceat(self._sorted(self.line), self.starts)
        return self

    def width_for(self, width: int, max_points: int) -> int:
        """The smallest width (`width` times a power of two) at which these steps alone fall into at most
        `max_points` buckets: the width the doubling would reach, found without reducing at each one."""
        s = self.step
        if s.size <= max_points:
            return width
        if not (s[1:] >= s[:-1]).all():
            s = np.sort(s)
        lo, hi = int(s[0]), int(s[-1])
        w = width
        while hi // w - lo // w + 1 > max_points:  # enough for any steps in [lo, hi]
            w *= 2
        while w > width:  # as few as the steps need (one check for a dense log)
            k = s // (w // 2)
            if np.count_nonzero(k[1:] != k[:-1]) + 1 > max_points:
                break
            w //= 2
        return w

    def _sorted(self, a: np.ndarray) -> np.ndarray:
        return a if self.order is None else a[self.order]

    def subset(self, ok: np.ndarray) -> StepIndex:
        return StepIndex(self.step[ok], self.line[ok])


def _segments(key: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(order that sorts `key` stably, or None when already sorted; start of each run of equal keys; the keys)."""
    order = None
    if key.size > 1 and not (key[1:] >= key[:-1]).all():
        order = np.argsort(key, kind="stable")
        key = key[order]
    starts = np.flatnonzero(key[1:] != key[:-1]) + 1 if key.size > 1 else np.empty(0, dtype=np.int64)
    starts = np.concatenate(([0], starts)) if key.size else starts
    return order, starts, key[starts]


class _Buckets:
    """One series' step buckets, sorted by key: the largest step and file line, the sum and count of
    the finite values, the count of non-finite ones and the last infinite value (NaN if none)."""

    __slots__ = ("key", "step", "line", "fsum", "fcount", "nf", "nfinf")

    def __init__(self, key, step, line, fsum, fcount, nf, nfinf):
        self.key, self.step, self.line, self.fsum = key, step, line, fsum
        self.fcount, self.nf, self.nfinf = fcount, nf, nfinf

    @classmethod
    def of_points(cls, value: np.ndarray, index: StepIndex) -> _Buckets:
        v = index._sorted(value)
        finite = np.isfinite(v)
        with np.errstate(over="ignore", invalid="ignore"):
            if finite.all():  # the common case: three passes over the column
                fsum = np.add.reduceat(v, index.starts) if v.size else v
                return cls(index.key, index.step_max, index.line_max, fsum, index.counts,
                           np.zeros_like(index.counts), None)
            fsum = np.add.reduceat(np.where(finite, v, 0.0), index.starts)
        fcount = np.add.reduceat(finite.astype(np.int64), index.starts)
        inf = np.isinf(v)
        nfinf = _last_of(np.where(inf, v, np.nan), inf, index.starts) if inf.any() else None
        return cls(index.key, index.step_max, index.line_max, fsum, fcount, index.counts - fcount, nfinf)

    def merged(self, other: _Buckets | None, shift: int = 0) -> _Buckets:
        """These buckets (keys >> shift) combined with `other` (earlier in the file), equal keys reduced."""
        parts = [b for b in (other, self) if b is not None]
        key = np.concatenate([b.key for b in parts])
        if shift:
            key = key >> shift
        order, starts, ukey = _segments(key)

        def cat(name):
            a = np.concatenate([getattr(b, name) for b in parts])
            return a if order is None else a[order]

        with np.errstate(over="ignore", invalid="ignore"):
            fsum = np.add.reduceat(cat("fsum"), starts)
        nfinf = None
        if any(b.nfinf is not None for b in parts):
            v = np.concatenate([np.full(b.key.size, np.nan) if b.nfinf is None else b.nfinf for b in parts])
            v = v if order is None else v[order]
            nfinf = _last_of(v, ~np.isnan(v), starts)
        return _Buckets(ukey, np.maximum.reduceat(cat("step"), starts), np.maximum.reduceat(cat("line"), starts),
                        fsum, np.add.reduceat(cat("fcount"), starts), np.add.reduceat(cat("nf"), starts), nfinf)


def _last_of(v: np.ndarray, present: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per segment, the last value where `present` (NaN when none): pandas' groupby `last`."""
    pos = np.maximum.reduceat(np.where(present, np.arange(v.size), -1), starts)
    return np.where(pos >= 0, v[np.maximum(pos, 0)], np.nan)


class LogBuilder:
    def __init__(self, fmt: str, max_points: int = MAX_POINTS, max_loss_series: int = MAX_LOSS_SERIES):
        self.fmt, self.max_points, self.max_loss_series, self.width = fmt, max_points, max_loss_series, 1
        self.series: dict[tuple[str, str, str], _Buckets | None] = {}
        self.dropped: dict[tuple[str, str], list[str]] = {}
        self.notes: list[str] = []
        self.raw_points = 0
        self._noted: set[str] = set()
        self.run_order: dict[str, int] = {}
        self._losses: dict[tuple[str, str], list[str]] = {}  # the loss components analysed, in log order

    def note(self, text: str, key: str | None = None) -> None:
        if key is None or key not in self._noted:
            self._noted.add(key or text)
            self.notes.append(text)

    def admit(self, run, split, metric) -> bool:
        """Whether the series is analysed: every series is, except loss components past
        `max_loss_series` in one run and split (recorded for the note)."""
        key = (str(run), str(split), str(metric))
        if key in self.series:
            return True
        if key[2].startswith("loss_"):
            kept = self._losses.setdefault(key[:2], [])
            if len(kept) >= self.max_loss_series:
                names = self.dropped.setdefault(key[:2], [])
                if key[2] not in names:
                    names.append(key[2])
                return False
            kept.append(key[2])
        self.run_order.setdefault(key[0], len(self.run_order))
        self.series[key] = None
        return True

    def index(self, step, line) -> StepIndex:
        return StepIndex(np.asarray(step, dtype=np.int64), np.asarray(line, dtype=np.int64))

    def add_series(self, run, split, metric, value: np.ndarray, index: StepIndex) -> None:
        """Raw points of one series at the steps of `index` (one value per step of the index)."""
        self.raw_points += value.size
        if value.size and self.admit(run, split, metric):
            self._widen(index.width_for(self.width, self.max_points) if index.width != self.width else self.width)
            self._merge((str(run), str(split), str(metric)), _Buckets.of_points(value, index.at(self.width)))

    def add_long(self, run, split, metric, step, value, line) -> None:
        """Append raw points (arrays, or scalars broadcast to the length of `value`)."""
        value = np.asarray(value, dtype=float)
        if value.size == 0:
            return
        n = value.size
        step = np.asarray(step, dtype=np.int64) if np.ndim(step) else np.full(n, step, dtype=np.int64)
        line = np.asarray(line, dtype=np.int64) if np.ndim(line) else np.full(n, line, dtype=np.int64)
        labels = [np.asarray(x, dtype=object) if np.ndim(x) else x for x in (run, split, metric)]
        if not any(np.ndim(x) for x in labels):
            self.add_series(*labels, value, self.index(step, line))
            return
        ids = pd.DataFrame({k: (x if np.ndim(x) else np.full(n, x,
                                                             dtype=object)) for k, x in zip(("r", "s", "m"), labels)})
        for (r, sp, m), idx in ids.groupby(["r", "s", "m"], sort=False).indices.items():
            self.add_series(r, sp, m, value[idx], self.index(step[idx], line[idx]))

    def _widen(self, width: int) -> None:
        """Every series' buckets at `width` (a power-of-two multiple of the current width)."""
        if width > self.width:
            shift = (width // self.width).bit_length() - 1
            self.width = width
            for k, b in self.series.items():
                if b is not None:
                    self.series[k] = b.merged(None, shift)

    def _merge(self, key: tuple[str, str, str], chunk: _Buckets) -> None:
        merged = chunk.merged(self.series[key])  # the chunk was bucketed at the current width
        self.series[key] = merged
        while merged.key.size > self.max_points:  # widen every series' buckets, this one's first
            self._widen(self.width * 2)
            merged = self.series[key]

    def result(self) -> ParsedLog:
        keys = sorted((k for k, b in self.series.items() if b is not None),
                      key=lambda k: (self.run_order[k[0]], k[1], k[2]))
        for (run, split), names in self.dropped.items():
            kept = self._losses[(run, split)]
            self.note(f"{run}: {len(kept) + len(names)} {split} loss components logged, the first "
                      f"{len(kept)} analysed ({kept[0]} ... {kept[-1]}); {len(names)} read but not analysed "
                      f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): the log rules compare "
                      "components pairwise", key=f"cap:{run}:{split}")
        if not keys:
            return ParsedLog(self.fmt, pd.DataFrame(columns=COLUMNS), self.notes, self.raw_points, self.width)
        parts = [self.series[k] for k in keys]
        sizes = [b.key.size for b in parts]

        def cat(name):
            return np.concatenate([getattr(b, name) for b in parts])

        fcount, nf = cat("fcount"), cat("nf")
        nfinf = np.concatenate([np.full(b.key.size, np.nan) if b.nfinf is None else b.nfinf for b in parts])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value = np.where(fcount > 0, cat("fsum") / np.maximum(fcount, 1), nfinf)
        frame = pd.DataFrame({"run": np.repeat([k[0] for k in keys], sizes).astype(object),
                              "split": np.repeat([k[1] for k in keys], sizes).astype(object),
                              "step": cat("step").astype(int), "metric": np.repeat([k[2] for k in keys],
                                                                                    sizes).astype(object),
                              "value": value.astype(float), "line": cat("line").astype(int),
                              "n": (fcount + nf).astype(int), "nonfinite": nf.astype(int)})
        if self.width > 1:
            self.note(f"long series reduced to at most {self.max_points} points each: steps averaged in buckets of "
                      f"{self.width} steps ({self.raw_points} logged values)")
        return ParsedLog(self.fmt, frame, self.notes, self.raw_points, self.width)
