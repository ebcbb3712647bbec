"""CSV logs: one row per logged step, a column per metric (Lightning CSVLogger, pandas exports, ...)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from reference_models.config import ConfigError

from .frame import ParsedLog, _from_table

NAME = "csv"

def parse_csv(path: Path) -> ParsedLog:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ConfigError(f"{path}: cannot read CSV log ({first[:160]})") from None
    return _from_table(df, "CSV", path.stem)




def sniff(path: Path, head: str | None) -> int:
    """2 by file name; 1 when the first line looks like a header of column names."""
    if path.name.lower().endswith((".csv", ".csv.gz", ".tsv")):
        return 2
    if head and head.count(",") >= 1 and not re.search(r"loss\s*:", head, re.I) and re.fullmatch(r"[\w/@.\- ,\"]+", head.strip()):
        return 1
    return 0


read = parse_csv
