"""TensorBoard event files, read with tensorboard's own reader (optional extra `tb`).

Tags written by our own `diagnose.integrations.scalars.TensorBoardSink` (``diagnose/<probe>/<target>/
<metric>``) are the probe records of a watched run: besides the losses, lr and logit scale they give the
log frame, they are read back whole into `RecordedLog.records` (step, probe, target, metric, value), so
the record rules (`embedding_collapse`, `update_ratio_high`, ...) run offline on them, and the alarm texts
(``diagnose/alarms``: ``step S: <id> (<severity>) <target>: <message>``) into `RecordedLog.alarms`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..logframe import ParsedLog
from .builder import LogBuilder
from .names import canonical_column

NAME = "tensorboard"
RECORD_COLUMNS = ["run", "step", "probe", "target", "metric", "value"]
ALARM_TAG = "diagnose/alarms"
_ALARM = re.compile(r"step (-?\d+): (\w+) \((info|warning|error)\) (.*?): (.*)", re.S)


@dataclass
class RecordedLog(ParsedLog):
    """A TensorBoard log that holds our own sink's tags: the probe records and alarms of a watched run."""

    records: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=RECORD_COLUMNS))
    alarms: list[dict] = field(default_factory=list)


def record_key(tag: str) -> tuple[str, str, str] | None:
    """'diagnose/collapse/image/cosine_mean' -> (probe, target, metric); a target may hold '/'."""
    parts = tag.split("/")
    if len(parts) < 4 or parts[0] != "diagnose":
        return None
    return parts[1], "/".join(parts[2:-1]), parts[-1]


def parse_alarm(text: str, run: str) -> dict | None:
    m = _ALARM.fullmatch(text.strip())
    if m is None:
        return None
    step, fid, severity, target, message = m.groups()
    return {"run": run, "step": int(step), "id": fid, "severity": severity, "target": target.strip(),
            "message": message.strip()}

def _event_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and "tfevents" in p.name)


# Scalars are read event by event (tensorboard's EventFileLoader) and handed to the reducer per tag in
# chunks, so memory does not grow with the event file.
CHUNK_EVENTS = 100_000


def _scalars(f: Path, texts: list | None = None):
    """(tag, step, value) of every scalar summary value of one event file, in file order; the alarm
    texts of our sink (`ALARM_TAG`) go to `texts` as (step, text)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    for event in EventFileLoader(str(f)).Load():
        if not event.HasField("summary"):
            continue
        for v in event.summary.value:
            plugin = v.metadata.plugin_data.plugin_name
            if plugin == "text" and texts is not None and v.tag.startswith(ALARM_TAG) and v.HasField("tensor"):
                texts.extend((int(event.step), x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x))
                             for x in tensor_util.make_ndarray(v.tensor).reshape(-1))
            if plugin != "scalars" or not v.HasField("tensor"):
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


class _Records:
    """Our own sink's tags as probe records (run, step, probe, target, metric, value), and its alarms."""

    def __init__(self):
        self.columns: dict[str, list] = {c: [] for c in RECORD_COLUMNS}
        self.alarms: list[dict] = []
        self.unread_alarms = 0

    def add(self, run: str, tag: str, step: int, value: float) -> None:
        key = record_key(tag)
        if key is not None:
            for c, x in zip(RECORD_COLUMNS, (run, step, *key, value)):
                self.columns[c].append(x)

    def add_alarms(self, run: str, texts: list) -> None:
        for step, text in texts:
            alarm = parse_alarm(text, run)
            if alarm is None:
                self.unread_alarms += 1
            else:
                self.alarms.append(alarm)

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.columns)
        return df.astype({"step": np.int64, "value": float}) if len(df) else pd.DataFrame(columns=RECORD_COLUMNS)


def _run_name(path: Path, f: Path) -> str:
    rel = f.parent.relative_to(path) if path.is_dir() else Path(".")
    return str(rel) if str(rel) != "." else (path.name if path.is_dir() else f.parent.name or "run")


def parse_tensorboard(path: Path) -> RecordedLog:
    """Scalars from TensorBoard event files via tensorboard's own reader (optional extra `tb`).
    Each event file's folder (relative to PATH) names its run."""
    try:
        import tensorboard.backend.event_processing.event_file_loader  # noqa: F401
    except ImportError:
        raise ConfigError(f"{path}: reading TensorBoard event files needs the optional extra: "
                          "pip install 'alignment-diagnose[tb]'") from None
    builder = LogBuilder("tensorboard")
    tags, records = _Tags(builder), _Records()
    for f in _event_files(path):
        run = _run_name(path, f)
        pending: dict[str, tuple] = {}
        texts: list = []
        try:
            for tag, step, value in _scalars(f, texts):
                records.add(run, tag, step, value)
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
        records.add_alarms(run, texts)
        for tag, (use, steps, values) in pending.items():
            if use and steps:
                tags.flush(run, tag, *use, steps, values)
    parsed = builder.result()
    if parsed.frame.empty:
        raise ConfigError(f"{path}: no loss or recall scalars found in TensorBoard event files")
    rec = records.frame()
    if len(rec):
        parsed.notes.append(f"{len(rec)} probe records of diagnose.watch read back from diagnose/... tags "
                            f"({rec['probe'].nunique()} probes): the record rules run on them")
    if records.unread_alarms:
        parsed.notes.append(f"{records.unread_alarms} {ALARM_TAG} text(s) not in the sink's format, not read")
    return RecordedLog(parsed.format, parsed.frame, parsed.notes, parsed.raw_points, parsed.bucket_steps,
                       records=rec, alarms=records.alarms)


def sniff(path: Path, head: str | None) -> int:
    return 3 if path.is_dir() or "tfevents" in path.name.lower() else 0


def read(path: Path) -> ParsedLog:
    if not _event_files(path):
        raise ConfigError(f"{path}: no TensorBoard event files (events.out.tfevents.*) found")
    return parse_tensorboard(path)
