"""The record schema, declared once: one row per measurement (step, probe, target, metric, value), plus
`run` where records of several runs share a frame (a run directory's records.csv.gz, an ablation).

The probes (`probes._records`, outside this package) produce rows in this order; the rules, the online
monitor, the rule process and the run directory read them by these names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

COLUMNS: tuple[str, ...] = ("step", "probe", "target", "metric", "value")
RUN_COLUMNS: tuple[str, ...] = ("run", *COLUMNS)
DTYPES = {"step": "int64", "probe": object, "target": object, "metric": object, "value": "float64"}


def empty_records() -> pd.DataFrame:
    """A records frame with no rows and the schema's dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=DTYPES[c]) for c in COLUMNS})


def frame_of(columns: Mapping[str, Sequence]) -> pd.DataFrame:
    """The records frame of column lists (what `probes._records.frame_of` builds from its buffer)."""
    return pd.DataFrame({c: pd.Series(columns[c], dtype=DTYPES[c] if DTYPES[c] is not object else None)
                         for c in COLUMNS}, columns=list(COLUMNS))
