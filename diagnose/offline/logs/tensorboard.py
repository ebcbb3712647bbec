"""TensorBoard event files, read with tensorboard's own reader (optional extra `tb`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reference_models.config import ConfigError

from .frame import ParsedLog, canonical_metric

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
    rows = []
    for f in _event_files(path):
        rel = f.parent.relative_to(path) if path.is_dir() else Path(".")
        run = str(rel) if str(rel) != "." else (path.name if path.is_dir() else f.parent.name or "run")
        try:
            acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
            acc.Reload()
            tags = acc.Tags().get("scalars", [])
        except Exception as exc:  # the reader raises assorted errors on corrupt files
            raise ConfigError(f"{f}: cannot read TensorBoard event file ({exc.__class__.__name__})") from None
        for tag in tags:
            split, metric = canonical_metric(tag)
            if metric is None:
                continue
            events = acc.Scalars(tag)
            pct = metric.startswith("r@") and any(e.value > 1 for e in events)
            for e in events:
                rows.append({"run": run, "split": split or "train", "step": int(e.step), "metric": metric,
                             "value": float(e.value) / (100.0 if pct else 1.0), "line": 0})
    if not rows:
        raise ConfigError(f"{path}: no loss or recall scalars found in TensorBoard event files")
    return ParsedLog("tensorboard", pd.DataFrame(rows, columns=["run", "split", "step", "metric", "value", "line"]))




def sniff(path: Path, head: str | None) -> int:
    return 3 if path.is_dir() or "tfevents" in path.name.lower() else 0


def read(path: Path) -> ParsedLog:
    if not _event_files(path):
        raise ConfigError(f"{path}: no TensorBoard event files (events.out.tfevents.*) found")
    return parse_tensorboard(path)
