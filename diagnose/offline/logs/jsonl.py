"""JSON-lines logs: one JSON object per line (nested keys flattened with /)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from reference_models.config import ConfigError

from .frame import ParsedLog, _flatten, _from_table

NAME = "jsonl"

def parse_jsonl(path: Path) -> ParsedLog:
    records = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno}: not a JSON object ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
        records.append(_flatten(obj))
    if not records:
        raise ConfigError(f"{path}: JSON-lines log has no records")
    return _from_table(pd.DataFrame(records), "JSON-lines", path.stem)




def sniff(path: Path, head: str | None) -> int:
    """2 by file name; 1 when the first line opens a JSON object (scored above CSV's header guess)."""
    if path.name.lower().endswith((".jsonl", ".ndjson", ".json")):
        return 2
    return 1 if head and head.lstrip().startswith("{") else 0


read = parse_jsonl
