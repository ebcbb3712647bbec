"""Hugging Face Trainer `trainer_state.json`: its `log_history` (one entry per logging step with `loss`,
`learning_rate`, `grad_norm`, `epoch`, `step`; evaluation entries with `eval_*`). The closing summary
entry (`train_runtime`, `train_loss` = the mean over the whole run) is not a point of the curve and is
skipped. The file is one JSON document (the Trainer writes it whole), read with the standard parser."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from ..logframe import ParsedLog
from .builder import LogBuilder, flatten_record
from .jsonl import parse_cell
from .table import TableMapper

NAME = "trainer_state"
_SUMMARY_KEYS = ("train_runtime", "total_flos")


def read(path: Path) -> ParsedLog:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            state = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not a JSON document ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply; expected a Trainer state with a log_history list") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise ConfigError(f"{path}: expected a Hugging Face trainer_state.json with a 'log_history' list")
    bad = next((i for i, e in enumerate(history) if not isinstance(e, dict)), None)
    if bad is not None:
        raise ConfigError(f"{path}: log_history[{bad}] is {type(history[bad]).__name__}; expected an object of metrics")
    entries = [{k: parse_cell(v) for k, v in flatten_record(e).items()} for e in history
               if not any(k in e for k in _SUMMARY_KEYS)]
    if not entries:
        raise ConfigError(f"{path}: log_history has no logged steps")
    mapper, builder = TableMapper(path.parent.name or path.stem), LogBuilder("trainer_state")
    mapper.add(pd.DataFrame(entries), builder, 0)
    mapper.check(path, "trainer_state.json")
    builder.note("line numbers are log_history indices")
    return builder.result()


def sniff(path: Path, head: str | None) -> int:
    """3 for the Trainer's file name or a .json whose opening names `log_history`."""
    name = path.name.lower()
    if name == "trainer_state.json":
        return 3
    if head is not None and name.endswith(".json"):
        with open(path, "rb") as fh:
            return 3 if b'"log_history"' in fh.read(65536) else 0
    return 0
