"""TensorBoard event files, read with tensorboard's own reader (optional extra `tb`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reference_models.config import ConfigError

from .frame import LogBuilder, ParsedLog, canonical_column

NAME = "tensorboard"

def _event_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and "tfevents" in p.name)


def parse_tensorboard(path: Path) -> ParsedLog:
    """Scalars from TensorBoard event files via tensorboard's own reader (optional extra `tb`).
    Each event file's folder (relative to PATH) names its run."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise ConfigError(f"{path}: reading TensorBoard event files needs the optional extra: "
                          "pip install 'alignment-diagnose[tb]'") from None
    builder = LogBuilder("tensorboard")
    chosen: dict[tuple, tuple[int, str]] = {}
    for f in _event_files(path):
        rel = f.parent.relative_to(path) if path.is_dir() else Path(".")
        run = str(rel) if str(rel) != "." else (path.name if path.is_dir() else f.parent.name or "run")
        try:
            acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
            acc.Reload()
            tags = acc.Tags().get("scalars", [])
        except Exception as exc:  # the reader raises assorted errors on corrupt files
            raise ConfigError(f"{f}: cannot read TensorBoard event file ({exc.__class__.__name__})") from None
        for tag in sorted(tags, key=lambda t: canonical_column(t)[2]):
            split, metric, rank = canonical_column(tag)
            if metric is None:
                continue
            prev = chosen.setdefault((run, split, metric), (rank, tag))
            if prev[1] != tag:
                builder.note(f"tag '{tag}' not used: '{prev[1]}' gives the same {metric}", key=f"dup:{tag}")
                continue
            events = acc.Scalars(tag)
            steps = np.array([e.step for e in events], dtype=np.int64)
            values = np.array([e.value for e in events], dtype=float)
            if metric == "temperature":
                with np.errstate(divide="ignore"):
                    values, metric = 1.0 / values, "logit_scale"
            elif metric == "log_logit_scale":
                values, metric = np.exp(values), "logit_scale"
            if metric.startswith("r@") and np.any(values[np.isfinite(values)] > 1):
                values = values / 100.0
                builder.note(f"tag '{tag}': values above 1 read as percentages", key=f"pct:{tag}")
            default = "all" if metric in ("lr", "logit_scale", "eval_size") else "train"
            builder.add_long(run, split or default, metric, steps, values, 0)
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
