"""Record storage: detached Python floats in column lists, a DataFrame built on demand.

One host transfer per step. Values computed inside forward hooks stay as small reduced tensors (a
handful of scalars per module, never activations) until the next `observe`, which stamps them with
its step; the probes' own values of that step (`later`) wait beside them, each with the function
that turns its floats into rows. `flush`, at the end of `observe`, turns all of them into floats
with one transfer per device (``torch.cat(...)``), never one `.item()` per metric. On CPU the rows are
there at once; on CUDA the copy goes into pinned memory without blocking and the rows land at a later
flush (`Transfer`, `MAX_IN_FLIGHT`), so the training loop never waits for the device; every read of the
rows waits. The update measured after the optimizer step waits for the next flush.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from typing import Callable, Iterable, NamedTuple, Sequence, Union

import pandas as pd
import torch

COLUMNS = ("step", "probe", "target", "metric", "value")

Value = Union[torch.Tensor, float, int]
Rows = Iterable[tuple[str, str, float]]  # (target, metric, value)


class Columns(NamedTuple):
    """Rows as three equal-length lists (a probe with many rows per step builds these, not tuples)."""

    targets: list[str]
    metrics: list[str]
    values: list[float]


def _numel(v: Value) -> int:
    return v.numel() if isinstance(v, torch.Tensor) else 1


def to_floats(values: Sequence[Value]) -> list[float]:
    """Flatten scalars and tensors into one list of floats, one host transfer per device: each device's
    tensors joined by one `torch.cat` under no_grad (a loss that requires grad needs no detach) and read
    as float32, each tensor converted first only where their dtypes differ."""
    return Transfer(values).floats()


class Transfer:
    """The floats of `values` on their way to the host, one transfer per device. CPU tensors are read at
    once. With ``wait=False`` a CUDA device's values are copied into pinned host memory without blocking
    (``copy_(non_blocking=True)``) and an event is recorded behind the copy: the training loop does not wait
    for the device, and `floats()` later waits only for that event (by then, a step later, usually done).
    The transfer holds no reference to the device tensors."""

    def __init__(self, values: Sequence[Value], wait: bool = True) -> None:
        self.n = len(values)
        self._scalars = {i: float(v) for i, v in enumerate(values) if not isinstance(v, torch.Tensor)}
        groups: dict[torch.device, list[tuple[int, torch.Tensor]]] = defaultdict(list)
        for i, v in enumerate(values):
            if isinstance(v, torch.Tensor):
                groups[v.device].append((i, v))
        self._groups: list[tuple[list[tuple[int, int]], Union[list[float], torch.Tensor]]] = []
        self._events: list = []
        with torch.no_grad():
            for device, items in groups.items():
                flat = _joined([t for _, t in items])
                sizes = [(i, t.numel()) for i, t in items]
                host = None if wait or device.type != "cuda" else _pinned(flat.shape)
                if host is None:
                    self._groups.append((sizes, flat.tolist()))
                    continue
                host.copy_(flat, non_blocking=True)
                event = torch.cuda.Event()
                event.record(torch.cuda.current_stream(device))
                self._groups.append((sizes, host))
                self._events.append(event)

    @property
    def pending(self) -> bool:
        """Some values are still being copied (only with ``wait=False`` on a CUDA device)."""
        return bool(self._events)

    def ready(self) -> bool:
        """Every copy has completed: `floats()` will not wait."""
        return all(e.query() for e in self._events)

    def floats(self) -> list[float]:
        for e in self._events:
            e.synchronize()
        self._events = []
        pieces: dict[int, list[float]] = {}
        for sizes, flat in self._groups:
            flat = flat.tolist() if isinstance(flat, torch.Tensor) else flat
            offset = 0
            for i, n in sizes:
                pieces[i] = flat[offset : offset + n]
                offset += n
        out: list[float] = []
        for i in range(self.n):
            if i in pieces:
                out.extend(pieces[i])
            else:
                out.append(self._scalars[i])
        return out


_PINNING = {"ok": True}


def _pinned(shape: torch.Size) -> torch.Tensor | None:
    """Page-locked host memory for a copy that does not block; None where none can be had (a container that
    refuses to pin memory): the values are then read at once, as on CPU. Pinned blocks are cached by torch."""
    if not _PINNING["ok"]:
        return None
    try:
        return torch.empty(shape, dtype=torch.float32, pin_memory=True)
    except RuntimeError:
        _PINNING["ok"] = False
        return None


def _joined(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One float32 1-d tensor of `tensors` (same device): 1-d tensors join as they are and one alone needs no
    cat (the fewer tensor ops, the cheaper the step); converted first only where their dtypes differ, else cat
    could promote to float16."""
    same = all(t.dtype == tensors[0].dtype for t in tensors)
    parts = [(t if t.dim() == 1 else t.reshape(-1)) if same else t.reshape(-1).float() for t in tensors]
    flat = parts[0] if len(parts) == 1 else torch.cat(parts)
    return flat if flat.dtype == torch.float32 else flat.float()


def _reduce(metric: str, values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    finite = [v for v in values if math.isfinite(v)]
    if metric.endswith("_min"):
        return min(finite) if finite else values[0]
    if metric.endswith("_max"):
        return max(finite) if finite else values[0]
    if metric.startswith("nonfinite") or metric.endswith("_count"):
        return float(sum(values))
    return sum(finite) / len(finite) if finite else values[0]


def _reduced_rows(keys: list[tuple[tuple[str, ...], str]]) -> Callable[[list[float]], Rows]:
    def finish(floats: list[float]) -> Rows:
        grouped: dict[tuple[str, str], list[float]] = {}
        i = 0
        for targets, metric in keys:
            for target in targets:
                grouped.setdefault((target, metric), []).append(floats[i])
                i += 1
        return [(t, m, _reduce(m, vals)) for (t, m), vals in grouped.items()]

    return finish


# Bounded memory: a buffer that reaches `max_rows` rows thins its history to half that: the newest
# steps holding up to a quarter of the budget stay at full resolution (online rules read recent
# trends), older rows keep only the steps that are multiples of a stride, doubled until the history
# fits. Step 0 is always kept (the initial state trend rules compare against), and the kept history
# is uniform in steps, so means and spans over it stay unbiased. A 100-byte row gives ~50 MB at the
# default budget whatever the number of steps.
MAX_ROWS = 500_000
# Transfers a buffer lets run behind the training loop (`flush(wait=False)`, CUDA): past this many steps'
# worth, the oldest is waited for, so a loop that never synchronises cannot queue them without bound.
MAX_IN_FLIGHT = 2


class RecordBuffer:
    """Committed rows (column lists) plus pending hook values waiting for their step.

    Args:
        max_rows: bound on the rows kept in memory (``None``: unbounded).
        spill: directory where rows dropped by thinning are written first, in chunks
            (parquet when pyarrow is installed, else csv.gz), so nothing measured is lost.
    """

    def __init__(self, max_rows: int | None = MAX_ROWS, spill: str | None = None) -> None:
        if max_rows is not None and max_rows < 1000:
            raise ValueError(f"max_rows={max_rows}: expected at least 1000 (or None for unbounded)")
        self.max_rows, self.spill = max_rows, spill
        self.stride = 1  # history before `dense_from` keeps steps % stride == 0
        self.dense_from: int | None = None
        self.dropped = 0
        self.appended = 0  # rows ever added (never decreases; `tail` reads what came since a count)
        self.spilled: list[str] = []
        self._cols: dict[str, list] = {c: [] for c in COLUMNS}
        self._frame: pd.DataFrame | None = None
        # pending: (probe, targets, metric, value) with len(targets) == value.numel()
        self._pending: list[tuple[str, tuple[str, ...], str, Value]] = []
        # later: (step, probe, values, finish) — finish(floats of values) -> rows; converted by flush
        self._later: list[tuple[int, str, list[Value], Callable[[list[float]], Rows]]] = []
        # in flight: ([(step, probe, number of floats, finish)], Transfer) of earlier flushes, oldest first
        self._in_flight: deque[tuple[list[tuple[int, str, int, Callable]], Transfer]] = deque()

    # -- committed rows ----------------------------------------------------------------------
    def add(self, step: int, probe: str, target: str, metric: str, value: float) -> None:
        self.appended += 1
        c = self._cols
        c["step"].append(int(step))
        c["probe"].append(probe)
        c["target"].append(target)
        c["metric"].append(metric)
        c["value"].append(float(value))
        self._frame = None

    def extend(self, step: int, probe: str, rows: Iterable[tuple[str, str, float]]) -> None:
        """Add (target, metric, value) rows sharing a step and probe."""
        rows = list(rows)
        if not rows:
            return
        c = self._cols
        self.appended += len(rows)
        c["step"].extend([int(step)] * len(rows))
        c["probe"].extend([probe] * len(rows))
        for target, metric, value in rows:
            c["target"].append(target)
            c["metric"].append(metric)
            c["value"].append(float(value))
        self._frame = None

    def extend_columns(self, step: int, probe: str, cols: Columns) -> None:
        """Add rows given as columns (list-level extends: no Python work per row beyond the float)."""
        n = len(cols.values)
        if not n:
            return
        c = self._cols
        self.appended += n
        c["step"].extend([int(step)] * n)
        c["probe"].extend([probe] * n)
        c["target"].extend(cols.targets)
        c["metric"].extend(cols.metrics)
        c["value"].extend(map(float, cols.values))
        self._frame = None

    def extend_values(self, step: int, probe: str, keys: list[tuple[str, str]], values: Sequence[Value]) -> None:
        """Rows (target, metric) -> scalar value, converted at the next `flush`."""
        keys = list(keys)
        self.later(step, probe, values, lambda floats: [(t, m, v) for (t, m), v in zip(keys, floats)])

    def later(self, step: int, probe: str, values: Sequence[Value], finish: Callable[[list[float]], Rows]) -> None:
        """Rows that need the floats of `values` (0-d tensors or numbers): `finish(floats)` gives
        them at the next `flush`, where all values of the step reach the host in one transfer."""
        self._later.append((int(step), probe, list(values), finish))
        self._frame = None

    def later_steps(self, steps: Sequence[int], probe: str, values: torch.Tensor, targets: list[str],
                    metrics: list[str]) -> None:
        """Rows of several steps computed together: row k of `values` (len(steps), len(targets)) holds step
        `steps[k]`'s values of (targets[j], metrics[j]); they reach the host with the next flush (one transfer)
        and each row is stamped with its own step."""
        steps, w = [int(s) for s in steps], len(targets)

        def finish(floats: list[float]) -> Columns:
            for k, step in enumerate(steps[:-1]):  # the last step's rows are returned, stamped by `flush`
                self.extend_columns(step, probe, Columns(targets, metrics, floats[k * w:(k + 1) * w]))
            return Columns(targets, metrics, floats[-w:])

        self.later(steps[-1], probe, [values], finish)

    def flush(self, wait: bool = True) -> None:
        """Convert every waiting value in one transfer per device and add the rows. With ``wait=False`` (the end
        of each `observe`) CUDA values are left to reach the host while training goes on: they land at a later
        flush, the first whose transfer has completed, or any read of the rows (which waits)."""
        while self._in_flight and (wait or len(self._in_flight) > MAX_IN_FLIGHT or self._in_flight[0][1].ready()):
            entries, transfer = self._in_flight.popleft()
            self._land(entries, transfer.floats())
        if not self._later:
            return
        later, self._later = self._later, []
        transfer = Transfer([v for _, _, values, _ in later for v in values], wait=wait)
        entries = [(step, probe, sum(_numel(v) for v in values), finish) for step, probe, values, finish in later]
        if transfer.pending:
            self._in_flight.append((entries, transfer))
        else:
            self._land(entries, transfer.floats())

    @property
    def in_flight(self) -> int:
        """Transfers still on their way to the host (see `flush`)."""
        return len(self._in_flight)

    def _land(self, entries: list[tuple[int, str, int, Callable]], floats: list[float]) -> None:
        i = 0
        for step, probe, n, finish in entries:
            rows = finish(floats[i : i + n])
            if isinstance(rows, Columns):
                self.extend_columns(step, probe, rows)
            else:
                self.extend(step, probe, rows)
            i += n
        if self.max_rows is not None and len(self) > self.max_rows:
            self._thin()

    def _thin(self) -> None:
        """Reduce the rows to at most max_rows / 2 (see MAX_ROWS)."""
        import numpy as np

        steps = np.asarray(self._cols["step"], dtype=np.int64)
        uniq, counts = np.unique(steps, return_counts=True)
        # newest steps whose rows fit in a quarter of the budget stay dense
        tail = np.cumsum(counts[::-1])
        n_dense = max(1, int(np.searchsorted(tail, self.max_rows // 4, side="right")))
        self.dense_from = int(uniq[len(uniq) - min(n_dense, len(uniq) - 1)]) if len(uniq) > 1 else int(uniq[0])
        dense = steps >= self.dense_from
        while True:
            keep = dense | (steps % self.stride == 0)
            if keep.sum() <= self.max_rows // 2 or self.stride > int(uniq[-1]):
                break
            self.stride *= 2
        if keep.all():
            return
        drop = ~keep
        if self.spill is not None:
            self._spill(drop)
        self.dropped += int(drop.sum())
        idx = np.flatnonzero(keep)
        for c in COLUMNS:
            col = self._cols[c]
            self._cols[c] = [col[i] for i in idx]
        self._frame = None

    def _spill(self, drop) -> None:
        import os

        part = pd.DataFrame({c: [v for v, d in zip(self._cols[c], drop) if d] for c in COLUMNS})
        os.makedirs(self.spill, exist_ok=True)
        base = os.path.join(self.spill, f"records-part-{len(self.spilled):05d}")
        try:
            part.to_parquet(base + ".parquet", index=False)
            self.spilled.append(base + ".parquet")
        except ImportError:  # no pyarrow / fastparquet
            part.to_csv(base + ".csv.gz", index=False)
            self.spilled.append(base + ".csv.gz")

    def since(self, count: int, wait: bool = True) -> list[tuple[int, str, str, str, float]]:
        """Rows added after `appended` was `count` (the newest rows are never thinned away as long
        as they are fewer than a quarter of max_rows); ``wait=False`` as in `columns_since`."""
        self.flush(wait)
        n = min(self.appended - count, len(self))
        if n <= 0:
            return []
        c = self._cols
        return list(zip(*(c[k][-n:] for k in COLUMNS)))

    def thinning(self) -> dict:
        """What the bound did to the records (for coverage)."""
        if not self.dropped:
            return {}
        return {"records_thinned": f"steps before {self.dense_from} kept every {self.stride} steps",
                "records_rows_dropped": self.dropped, "records_spilled": list(self.spilled)}

    # -- pending values from hooks -----------------------------------------------------------
    def defer(self, probe: str, target: str | Sequence[str], metric: str, value: Value) -> None:
        targets = (target,) if isinstance(target, str) else tuple(target)
        self._pending.append((probe, targets, metric, value))

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def commit_pending(self, step: int) -> None:
        """Stamp every pending value with `step` (converted at the next `flush`); repeated keys
        (several forwards in one step) are reduced."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        by_probe: dict[str, list[tuple[tuple[str, ...], str, Value]]] = {}
        for probe, targets, metric, value in pending:
            by_probe.setdefault(probe, []).append((targets, metric, value))
        for probe, items in by_probe.items():
            self.later(step, probe, [v for _, _, v in items], _reduced_rows([(t, m) for t, m, _ in items]))

    # -- output ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._cols["step"])

    def frame(self) -> pd.DataFrame:
        self.flush()
        if self._frame is None:
            self._frame = frame_of(self._cols)
        return self._frame

    def columns_since(self, count: int | None, wait: bool = True) -> dict[str, list]:
        """Copies of the columns of the rows added after `appended` was `count` (all rows for None).
        Valid as a continuation only while no thinning happened in between (`dropped` unchanged). With
        ``wait=False`` values still on their way to the host (`flush`) are left out: they come with a later call."""
        self.flush(wait)
        n = len(self) if count is None else min(self.appended - count, len(self))
        return {c: (v[len(v) - n:] if n > 0 else []) for c, v in self._cols.items()}

    def snapshot(self, wait: bool = True) -> Callable[[], pd.DataFrame]:
        """The rows so far, for another thread: the values reach the host here (one transfer; with ``wait=False``
        those still on their way are left out, as in `columns_since`) and the columns are copied (pointer
        copies), so building the frame, the costly part, can happen there while this buffer keeps growing or
        thins."""
        self.flush(wait)
        if self._frame is not None:
            frame = self._frame
            return lambda: frame
        cols = {c: list(v) for c, v in self._cols.items()}
        return lambda: frame_of(cols)


def frame_of(cols: dict[str, list]) -> pd.DataFrame:
    """Long DataFrame of record columns (step int64, probe/target/metric str, value float64)."""
    return pd.DataFrame(
        {
            "step": pd.Series(cols["step"], dtype="int64"),
            "probe": pd.Series(cols["probe"]),
            "target": pd.Series(cols["target"]),
            "metric": pd.Series(cols["metric"]),
            "value": pd.Series(cols["value"], dtype="float64"),
        },
        columns=list(COLUMNS),
    )
