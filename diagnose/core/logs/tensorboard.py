"""TensorBoard event files, read with tensorboard's own reader (optional extra `tb`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..logframe import ParsedLog
from .builder import LogBuilder
from .names import canonical_column

NAME = "tensorboard"

def _event_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and "tfevents" in p.name)


# Scalars are read event by event (tensorboard's EventFileLoader) and handed to the reducer per tag in
# chunks, so memory does not grow with the event file.
CHUNK_EVENTS = 100_000


def _scalars(f: Path):
    """(tag, step, value) of every scalar summary value of one event file, in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    for event in EventFileLoader(str(f)).Load():
        if not event.HasField("summary"):
            continue
        for v in event.summary.value:
            if v.metadata.plugin_data.plugin_name != "scalars" or not v.HasField("tensor"):
                continue
            arr = tensor_util.make_ndarray(v.tensor)
            if arr.size == 1:
                yield v.tag, int(event.step), float(arr.reshape(-1)[0])


class _Tags:
    """Which tag gives which (split, metric) of a run, and the chunks handed to the reducer."""

    def __init__(self, builder: LogBuilder):
        self.builder, self.chosen, self.buffers = builder, {}, {}

    def use(self, run: str, tag: str):
        split, metric, rank = canonical_column(tag)
        if metric is None:
            return None
        prev = self.chosen.setdefault((run, split, metric), (rank, tag))
        if prev[1] != tag:  # the first tag seen for a (run, split, metric) is read, in file order
            self.builder.note(f"tag '{tag}' not used: '{prev[1]}' gives the same {metric}", key=f"dup:{tag}")
            return None
        return split, metric

    def flush(self, run: str, tag: str, split, metric: str, steps: list, values: list) -> None:
        values = np.array(values, dtype=float)
        if metric == "temperature":
            with np.errstate(divide="ignore"):
                values, metric = 1.0 / values, "logit_scale"
        elif metric == "log_logit_scale":
            with np.errstate(over="ignore"):
                values, metric = np.exp(values), "logit_scale"
        if metric.startswith("r@") and np.any(values[np.isfinite(values)] > 1):
            values = values / 100.0
            self.builder.note(f"tag '{tag}': values above 1 read as percentages", key=f"pct:{tag}")
        default = "all" if metric in ("lr", "logit_scale", "eval_size") else "train"
        self.builder.add_long(run, split or default, metric, np.array(steps, dtype=np.int64), values, 0)


def parse_tensorboard(path: Path) -> ParsedLog:
    """Scalars from TensorBoard event files via tensorboard's own reader (optional extra `tb`).
    Each event file's folder (relative to PATH) names its run."""
    try:
        import tensorboard.backend.event_processing.event_file_loader  # noqa: F401
    except ImportError:
        raise ConfigError(f"{path}: reading TensorBoard event files needs the optional extra: "
                          "pip install 'alignment-diagnose[tb]'") from None
    builder = LogBuilder("tensorboard")
    tags = _Tags(builder)
    for f in _event_files(path):
        rel = f.parent.relative_to(path) if path.is_dir() else Path(".")
        run = str(rel) if str(rel) != "." else (path.name if path.is_dir() else f.parent.name or "run")
        pending: dict[str, tuple] = {}
        try:
            for tag, step, value in _scalars(f):
                entry = pending.get(tag)
                if entry is None:
                    use = tags.use(run, tag)
                    entry = pending[tag] = (use, [], []) if use else (None, None, None)
                if entry[0] is None:
                    continue
                entry[1].append(step), entry[2].append(value)
                if len(entry[1]) >= CHUNK_EVENTS:
                    tags.flush(run, tag, *entry[0], entry[1], entry[2])
                    entry[1].clear(), entry[2].clear()
        except Exception as exc:  # the reader raises assorted errors on corrupt files
            raise ConfigError(f"{f}: cannot read TensorBoard event file ({exc.__class__.__name__})") from None
        for tag, (use, steps, values) in pending.items():
            if use and steps:
                tags.flush(run, tag, *use, steps, values)
    parsed = builder.result()
    if parsed.frame.empty:
        raise ConfigError(f"{path}: no loss or recall scalars found in TensorBoard event files")
    return parsed


def sniff(path: Path, head: str | None) -> int:
    return 3 if path.is_dir() or "tfevents" in path.name.lower() else 0


def read(path: Path) -> ParsedLog:
    if not _event_files(path):
        raise ConfigError(f"{path}: no TensorBoard event files (events.out.tfevents.*) found")
    return parse_tensorboard(path)
