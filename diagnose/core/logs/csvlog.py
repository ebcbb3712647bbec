"""CSV logs: one row per logged step, a column per metric (Lightning CSVLogger `metrics.csv`, W&B history
exports with `_step`, pandas exports, ...). Streamed in chunks; only recognised columns are parsed."""

from __future__ import annotations

import csv
import gzip
import io
import re
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from ..logframe import ParsedLog
from .builder import LogBuilder
from .table import TableMapper, column_of_run

NAME = "csv"
# Rows per chunk: bounded memory (a chunk of the recognised columns is a few MB) with little overhead;
# fewer for wide tables, whose rows the parser tokenises whole (about CHUNK_BYTES of text per chunk at
# ~8 bytes per cell).
CHUNK_ROWS, CHUNK_BYTES = 200_000, 40_000_000


def _header(path: Path) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
        line = fh.readline(50_000_000)
    delimiter = "\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ","
    return next(csv.reader(io.StringIO(line), delimiter=delimiter), [])


def parse_csv(path: Path) -> ParsedLog:
    header = _header(path)
    mapper, builder = TableMapper(path.stem), LogBuilder("CSV")
    if not header or len(set(header)) != len(header):
        dup = sorted({c for c in header if header.count(c) > 1})[:3]
        raise ConfigError(f"{path}: CSV header {'is empty' if not header else 'repeats column(s) ' + ', '.join(dup)}; "
                          "expected one row of distinct column names")
    specials = set(mapper.special(header))  # once: per column it was quadratic in the header (3,000 columns: 12 s)
    keep = [c for c in header if c in specials or column_of_run(c)[1][1] is not None]
    if not keep:
        raise ConfigError(f"{path}: no loss or recall columns found in the CSV log (columns: {', '.join(header[:12])})")
    if len(header) > len(keep) + 3:
        builder.note(f"{len(header)} columns, {len(keep)} read (the recognised ones)")
    sep = "\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ","
    line0 = 2
    try:
        for chunk in pd.read_csv(path, sep=sep, usecols=keep,
                                 chunksize=max(1000, min(CHUNK_ROWS, CHUNK_BYTES // (8 * len(header)))),
                                 keep_default_na=False,
                                 na_values=[""], low_memory=True, encoding_errors="replace"):
            mapper.add(chunk, builder, line0)
            line0 += len(chunk)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OverflowError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ConfigError(f"{path}: cannot read CSV log near line {line0} ({first[:160]})") from None
    mapper.check(path, "CSV")
    return builder.result()


def sniff(path: Path, head: str | None) -> int:
    """2 by file name; 1 when the first line looks like a header of column names."""
    if path.name.lower().endswith((".csv", ".csv.gz", ".tsv")):
        return 2
    if head and head.count(",") >= 1 and not re.search(r"loss\s*:", head,
                                                       re.I) and re.fullmatch(r"[\w/@.\- ,\"]+", head.strip()):
        return 1
    return 0


read = parse_csv
