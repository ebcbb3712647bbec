"""JSON-lines logs: one JSON object per line (nested keys flattened with /; W&B history exports with
`_step`). Streamed: records are collected in chunks with only their recognised keys."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from ..logframe import ParsedLog
from .builder import MAX_DEPTH, LogBuilder, flatten_record
from .names import RUN_COLUMNS, SPLIT_COLUMNS, STEP_COLUMNS, canonical_column
from .table import TableMapper

NAME = "jsonl"
CHUNK_RECORDS = 100_000


def parse_cell(v):
    """A logged NaN stays a value ('nan'), not a missing cell; lists/objects are not metrics."""
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, bool):  # true/false is not a metric value
        return str(v).lower()
    return v if isinstance(v, (int, float, str)) or v is None else str(v)[:40]


def records(path: Path, keep_all: bool = False):
    """(line number, flattened record) per non-empty line; one-line errors for what is not a record."""
    known: dict[str, bool] = {}
    skipped: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: not a JSON object ({exc.msg})") from None
            except RecursionError:
                raise ConfigError(f"{path}:{lineno}: JSON nested too deeply; expected a flat or shallow object of "
                                  "metrics") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
            flat = flatten_record(obj, skipped=skipped) if any(type(v) is dict for v in obj.values()) else obj
            out = {}
            for k, v in flat.items():
                keep = known.get(k)
                if keep is None:
                    keep = known[k] = keep_all or canonical_column(k)[1] is not None or k.strip().lower() in _SPECIAL
                if keep:
                    out[k] = v if type(v) is int or (type(v) is float and v == v) else parse_cell(v)
            yield lineno, out, skipped


_SPECIAL = {*RUN_COLUMNS, *SPLIT_COLUMNS, *STEP_COLUMNS}


def parse_jsonl(path: Path) -> ParsedLog:
    mapper, builder = TableMapper(path.stem), LogBuilder("JSON-lines")
    chunk, first_line, n, skipped = [], 1, 0, []
    for lineno, rec, skipped in records(path):
        if not chunk:
            first_line = lineno
        chunk.append(rec)
        n += 1
        if len(chunk) >= CHUNK_RECORDS:
            mapper.add(pd.DataFrame(chunk), builder, first_line)
            chunk = []
    if chunk:
        mapper.add(pd.DataFrame(chunk), builder, first_line)
    if n == 0:
        raise ConfigError(f"{path}: JSON-lines log has no records")
    if skipped:
        builder.note(f"keys nested deeper than {MAX_DEPTH} levels skipped (e.g. '{skipped[0][:60]}')")
    mapper.check(path, "JSON-lines")
    return builder.result()


def sniff(path: Path, head: str | None) -> int:
    """2 by file name; 1 when the first line opens a JSON object (scored above CSV's header guess)."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson")) or (name.endswith(".json") and head and head.lstrip().startswith("{")
                                                and '"log_history"' not in head):
        return 2
    return 1 if head and head.lstrip().startswith("{") else 0


read = parse_jsonl
