"""Record storage: detached Python floats in column lists, a DataFrame built on demand.

Values computed inside forward hooks stay as small reduced tensors (a handful of scalars per
module, never activations) until the next `observe`, where all of them are turned into floats
with one device synchronisation and stamped with that step.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Sequence, Union

import pandas as pd
import torch

COLUMNS = ("step", "probe", "target", "metric", "value")

Value = Union[torch.Tensor, float, int]


def to_floats(values: Sequence[Value]) -> list[float]:
    """Flatten scalars and tensors into one list of floats, one host transfer per device."""
    tensor_groups: dict[torch.device, list[tuple[int, torch.Tensor]]] = defaultdict(list)
    sizes: list[int] = []
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            t = v.detach().reshape(-1)
            tensor_groups[t.device].append((i, t))
            sizes.append(t.numel())
        else:
            sizes.append(1)
    pieces: dict[int, list[float]] = {}
    for _, items in tensor_groups.items():
        flat = torch.cat([t.float() for _, t in items]).tolist()
        offset = 0
        for i, t in items:
            n = t.numel()
            pieces[i] = flat[offset : offset + n]
            offset += n
    out: list[float] = []
    for i, v in enumerate(values):
        if i in pieces:
            out.extend(pieces[i])
        else:
            out.append(float(v))
    return out


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


class RecordBuffer:
    """Committed rows (column lists) plus pending hook values waiting for their step."""

    def __init__(self) -> None:
        self._cols: dict[str, list] = {c: [] for c in COLUMNS}
        self._frame: pd.DataFrame | None = None
        # pending: (probe, targets, metric, value) with len(targets) == value.numel()
        self._pending: list[tuple[str, tuple[str, ...], str, Value]] = []

    # -- committed rows ----------------------------------------------------------------------
    def add(self, step: int, probe: str, target: str, metric: str, value: float) -> None:
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
        c["step"].extend([int(step)] * len(rows))
        c["probe"].extend([probe] * len(rows))
        for target, metric, value in rows:
            c["target"].append(target)
            c["metric"].append(metric)
            c["value"].append(float(value))
        self._frame = None

    def extend_values(self, step: int, probe: str, keys: list[tuple[str, str]], values: Sequence[Value]) -> None:
        """Like `extend` with the values converted by `to_floats` in one go."""
        self.extend(step, probe, [(t, m, v) for (t, m), v in zip(keys, to_floats(values))])

    # -- pending values from hooks -----------------------------------------------------------
    def defer(self, probe: str, target: str | Sequence[str], metric: str, value: Value) -> None:
        targets = (target,) if isinstance(target, str) else tuple(target)
        self._pending.append((probe, targets, metric, value))

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def commit_pending(self, step: int) -> None:
        """Stamp every pending value with `step`; repeated keys (several forwards) are reduced."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        floats = to_floats([v for _, _, _, v in pending])
        grouped: dict[tuple[str, str, str], list[float]] = {}
        i = 0
        for probe, targets, metric, _ in pending:
            for target in targets:
                grouped.setdefault((probe, target, metric), []).append(floats[i])
                i += 1
        for (probe, target, metric), vals in grouped.items():
            self.add(step, probe, target, metric, _reduce(metric, vals))

    # -- output ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._cols["step"])

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            c = self._cols
            self._frame = pd.DataFrame(
                {
                    "step": pd.Series(c["step"], dtype="int64"),
                    "probe": pd.Series(c["probe"]),
                    "target": pd.Series(c["target"]),
                    "metric": pd.Series(c["metric"]),
                    "value": pd.Series(c["value"], dtype="float64"),
                },
                columns=list(COLUMNS),
            )
        return self._frame
