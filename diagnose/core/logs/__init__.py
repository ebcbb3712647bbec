"""Training logs: one reader module per format, registered in `READERS`.

Every reader turns its format into the one long frame of `diagnose.core.logframe.ParsedLog` (run, split, step, metric,
value, line) with canonical metric names, so the log rules (`diagnose.core.rules.logs`) never depend on
the format the numbers came from. A reader module has `NAME`, `sniff(path, head) -> int` (how sure it
is that the file is its format: 0 no, 1 by content, 2 by file name, 3 certain; `head` is the first
non-empty line of a text file, None for a directory) and `read(path) -> ParsedLog`. A new format is
one module added to `READERS`. Readers stream: they feed `builder.LogBuilder` in chunks (wide tables
through `table.TableMapper`, which picks the recognised columns), so memory is bounded by the number
of series, not the size of the file.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from ..logframe import ParsedLog
from . import csvlog, jsonl, tensorboard, text, trainer_state
from .names import canonical_losses

READERS = (tensorboard, trainer_state, jsonl, csvlog, text)  # ties in `sniff` go to the earlier reader
BY_NAME = {r.NAME: r for r in READERS}
FORMATS = ("auto", *BY_NAME)


def _head(path: Path) -> str | None:
    if path.is_dir():
        return None
    with open(path, "rb") as fh:
        raw = fh.read(4096)
    if b"\x00" in raw:
        return None
    return next((ln for ln in raw.decode("utf-8", "replace").splitlines() if ln.strip()), "")


def detect_format(path: Path) -> str:
    head = _head(path)
    score, reader = max(((r.sniff(path, head), -i, r) for i, r in enumerate(READERS)), key=lambda t: t[:2])[0::2]
    if score == 0:
        raise ConfigError(f"{path}: binary file of unknown format; expected a text, CSV, JSON-lines, "
                          "trainer_state.json or TensorBoard log")
    return reader.NAME


def read_log(path: Path, fmt: str = "auto") -> ParsedLog:
    path = Path(path)
    if fmt not in FORMATS:
        raise ConfigError(f"--format '{fmt}': expected one of {', '.join(FORMATS)}")
    if not path.exists():
        raise ConfigError(f"{path}: log file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise ConfigError(f"{path}: log file is empty")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if path.is_dir() and fmt != "tensorboard":
        raise ConfigError(f"{path}: is a directory; expected a log file (or a TensorBoard log directory)")
    parsed = BY_NAME[fmt].read(path)
    metrics = pd.unique(parsed.frame["metric"])  # a few names, not one per row
    if parsed.frame.empty or not any(str(m).startswith(("loss", "r@")) for m in metrics):
        raise ConfigError(f"{path}: no losses or recalls found in the {parsed.format} log "
                          "(expected e.g. 'Train Loss: 6.0602 (CLIP: 4.8481, MRL: 4.8481)' or loss columns)")
    parsed.frame = canonical_losses(parsed.frame)  # the names diagnose.watch records: total, loss_<name>
    return parsed


def parse_weights(text: str | None) -> dict[str, float] | None:
    """'clip=0.25,mrl=1.0' -> {'loss_clip': 0.25, 'loss_mrl': 1.0}."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        try:
            w = float(value)
        except ValueError:
            w = None
        if not eq or not name.strip() or w is None or not math.isfinite(w):
            raise ConfigError(f"--weights '{text}': expected name=number pairs, e.g. clip=0.25,mrl=1.0")
        key = name.strip().lower()
        out[key if key.startswith("loss_") else f"loss_{key}"] = w
    return out


__all__ = ["BY_NAME", "FORMATS", "READERS", "ParsedLog", "detect_format", "parse_weights", "read_log"]
