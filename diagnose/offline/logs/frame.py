"""The one long frame every log format is read into (run, split, step, metric, value, line), with
canonical metric names: `loss` (the logged total), `loss_<component>`, `r@K` (a fraction), plus `lr` and
`logit_scale` when logged. Readers produce it; the log rules (`diagnose.rules.logs`) read it."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reference_models.config import ConfigError

# --- canonical metric names ------------------------------------------------------------------------
SPLITS = {"train": "train", "training": "train", "tr": "train", "val": "val", "valid": "val",
          "validation": "val", "eval": "val", "test": "val", "dev": "val"}
TOTAL_NAMES = {"loss", "total", "total_loss", "loss_total", "totalloss", "objective"}
STEP_COLUMNS = ("step", "global_step", "_step", "iteration", "iter", "it", "epoch")  # _step: W&B history
RUN_COLUMNS = ("run", "run_name", "name", "model", "experiment")
SPLIT_COLUMNS = ("split", "phase", "mode", "stage")
_NUM = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"


# Logged names that are evidence rather than losses: the learning rate (Lightning's LearningRateMonitor
# writes `lr-<Optimizer>[/pg<i>]`, HF Trainer `learning_rate`), the logit scale (stored as the multiplier
# exp(t), open_clip's `scale`), the temperature (1 / multiplier), and the evaluation set size.
LR_NAMES = {"lr", "learning_rate", "learningrate"}
SCALE_NAMES = {"logit_scale", "scale", "logit_scale_exp", "scale_val", "logit_scale_value"}
LOG_SCALE_NAMES = {"log_logit_scale", "logit_scale_log", "logit_scale_raw"}
TEMPERATURE_NAMES = {"temperature", "temp", "tau"}
EVAL_SIZE_NAMES = {"eval_size", "eval_samples", "num_eval", "n_eval", "eval_pairs", "num_eval_samples", "eval_n"}
# Lightning appends _step / _epoch to a metric logged with both on_step and on_epoch; per-step rows are
# preferred (more points), then the plain name, then the per-epoch aggregate.
_SUFFIX_RANK = {"": 0, "_step": 1, "_epoch": 2}
# open_clip / retrieval evaluators log both directions; the first found is used, the other noted.
_RECALL_DIR = r"(?:(?:i2t|t2i|image_to_text|text_to_image|img2txt|txt2img)_)?"


def _split_prefix(name: str) -> tuple[str | None, str]:
    """'train/loss_clip' -> ('train', 'loss_clip'); 'loss/val' -> ('val', 'loss')."""
    for sep in ("/", ".", "_", "-", " "):
        head, _, rest = name.partition(sep)
        if rest and head in SPLITS:
            return SPLITS[head], rest
        stem, _, tail = name.rpartition(sep)
        if stem and tail in SPLITS:
            return SPLITS[tail], stem
    return None, name


def _evidence(n: str) -> str | None:
    n = n.replace("/", "_").replace(".", "_").replace("-", "_")
    if n in LR_NAMES or re.fullmatch(r"(?:lr|learning_rate)_\w+", n):
        return "lr"
    if n in SCALE_NAMES:
        return "logit_scale"
    if n in LOG_SCALE_NAMES:
        return "log_logit_scale"
    if n in TEMPERATURE_NAMES:
        return "temperature"
    return "eval_size" if n in EVAL_SIZE_NAMES else None


@functools.lru_cache(maxsize=65536)
def canonical_column(name: str) -> tuple[str | None, str | None, int]:
    """(split or None, canonical metric or None, preference rank: lower wins when columns collide)."""
    n = re.sub(r"\s+", "_", str(name).strip().lower())
    if n.startswith("diagnose/"):  # our own TensorBoard writer: diagnose/<probe>/<target>/<metric>
        return _diagnose_tag(n)
    ev = _evidence(n)
    if ev is not None:
        return None, ev, 0
    rank = 0
    for suffix in ("_step", "_epoch"):
        if n.endswith(suffix) and len(n) > len(suffix):
            n, rank = n[: -len(suffix)], _SUFFIX_RANK[suffix]
            break
    split, metric = canonical_metric(n)
    return split, metric, rank


def _diagnose_tag(n: str) -> tuple[str | None, str | None, int]:
    parts = n.split("/")
    if len(parts) != 4:
        return None, None, 0
    _, probe, target, metric = parts
    if probe == "loss_split" and metric == "value":
        return "train", canonical_metric(target)[1], 0
    if probe in ("loss", "train") and metric in ("value", "loss"):
        return "train", canonical_metric(target)[1] or "loss", 0
    if re.fullmatch(r"r@\d+", metric):
        return "val", metric, 0
    if metric in ("logit_scale", "scale"):
        return None, "logit_scale", 0
    if metric in ("lr", "learning_rate"):
        return None, "lr", 0
    return None, None, 0


@functools.lru_cache(maxsize=4096)
def canonical_metric(name: str) -> tuple[str | None, str | None]:
    """(split or None, canonical metric or None when the column is not a loss or a recall)."""
    n = re.sub(r"\s+", "_", str(name).strip().lower())
    split, n = _split_prefix(n)
    n = n.replace("/", "_").replace(".", "_").replace("-", "_")
    if n in TOTAL_NAMES:
        return split, "loss"
    m = re.fullmatch(_RECALL_DIR + r"(?:retrieval_)?(?:r|recall)(?:@|_at_|_@_|_|)(\d+)", n)
    if m:
        return split, f"r@{int(m.group(1))}"
    m = re.fullmatch(r"loss_(.+)", n) or re.fullmatch(r"(.+?)_loss", n) or re.fullmatch(r"losses_(.+)", n)
    if m and m.group(1) not in TOTAL_NAMES:
        return split, "loss_" + m.group(1).strip("_")
    return split, None


COLUMNS = ["run", "split", "step", "metric", "value", "line", "n", "nonfinite"]


@dataclass
class ParsedLog:
    """`frame`: one row per (run, split, metric, step bucket): `value` the mean of the finite values
    logged in the bucket (the non-finite value when none is finite), `n` the raw points in it,
    `nonfinite` how many of them were NaN/inf. Buckets are single steps until a series passes
    MAX_POINTS (see `LogBuilder`)."""

    format: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    raw_points: int = 0
    bucket_steps: int = 1

    @property
    def runs(self) -> list[str]:
        return list(dict.fromkeys(self.frame["run"]))


# Deeper nesting than this in a JSON record is not a metric any logger writes; it is skipped, noted.
MAX_DEPTH = 8


def _flatten(obj: dict, prefix: str = "", depth: int = 0, skipped: list | None = None) -> dict:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            if depth >= MAX_DEPTH:
                if skipped is not None:
                    skipped.append(key)
                continue
            out.update(_flatten(v, key, depth + 1, skipped))
        else:
            out[key] = v
    return out


# --- streaming reduction -----------------------------------------------------------------------------
# Every series (run, split, metric) keeps at most MAX_POINTS step buckets. Steps are bucketed by
# step // width with one width for the whole log, doubled (adjacent buckets merged) whenever a series
# would exceed MAX_POINTS. A bucket keeps the mean of its finite values, so: metrics logged at the same
# steps stay aligned (same buckets), linear relations between columns (total = sum w_i L_i, identical
# components) hold exactly on the means, and the standard error of a window mean computed from bucket
# means equals the one from the raw points (each bucket mean carries 1/m of the per-point variance).
# 2048 points resolve a trend to 0.05% of the run; memory is O(series x MAX_POINTS), not O(file).
MAX_POINTS = 2048
_KEYS = ["run", "split", "metric", "key"]


class LogBuilder:
    def __init__(self, fmt: str, max_points: int = MAX_POINTS):
        self.fmt, self.max_points, self.width = fmt, max_points, 1
        self.acc: pd.DataFrame | None = None
        self.notes: list[str] = []
        self.raw_points = 0
        self._noted: set[str] = set()
        self.run_order: dict[str, int] = {}

    def note(self, text: str, key: str | None = None) -> None:
        if key is None or key not in self._noted:
            self._noted.add(key or text)
            self.notes.append(text)

    def add_long(self, run, split, metric, step, value, line) -> None:
        """Append raw points (arrays, or scalars broadcast to the length of `value`)."""
        value = np.asarray(value, dtype=float)
        if value.size == 0:
            return
        n = value.size
        step = np.asarray(step, dtype=np.int64) if np.ndim(step) else np.full(n, step, dtype=np.int64)
        line = np.asarray(line, dtype=np.int64) if np.ndim(line) else np.full(n, line, dtype=np.int64)
        self.raw_points += n
        labels = [np.asarray(x, dtype=object) if np.ndim(x) else x for x in (run, split, metric)]
        if not any(np.ndim(x) for x in labels):
            self._merge(self._series_chunk(*labels, step, value, line))
            return
        ids = pd.DataFrame({k: (x if np.ndim(x) else np.full(n, x, dtype=object)) for k, x in zip(("r", "s", "m"), labels)})
        parts = [self._series_chunk(r, sp, m, step[idx], value[idx], line[idx])
                 for (r, sp, m), idx in ids.groupby(["r", "s", "m"], sort=False).indices.items()]
        self._merge(pd.concat(parts, ignore_index=True))

    def _series_chunk(self, run, split, metric, step, value, line) -> pd.DataFrame:
        """One series' raw points pre-aggregated into its step buckets (numeric keys only: fast)."""
        run = str(run)
        self.run_order.setdefault(run, len(self.run_order))
        finite = np.isfinite(value)
        chunk = pd.DataFrame({"key": step // self.width, "step": step, "line": line,
                              "fsum": np.where(finite, value, 0.0), "fcount": finite.astype(np.int64),
                              "nf": (~finite).astype(np.int64), "nfinf": np.where(np.isinf(value), value, np.nan)})
        with np.errstate(over="ignore", invalid="ignore"):
            chunk = chunk.groupby("key", sort=False, as_index=False).agg(
                step=("step", "max"), line=("line", "max"), fsum=("fsum", "sum"), fcount=("fcount", "sum"),
                nf=("nf", "sum"), nfinf=("nfinf", "last"))
        return chunk.assign(run=run, split=str(split), metric=str(metric))

    def _merge(self, chunk: pd.DataFrame) -> None:
        frame = chunk if self.acc is None else pd.concat([self.acc, chunk], ignore_index=True)
        frame = self._group(frame)
        while frame.groupby(["run", "split", "metric"], sort=False).size().max() > self.max_points:
            self.width *= 2
            frame = self._group(frame.assign(key=frame["key"] // 2))
        self.acc = frame

    @staticmethod
    def _group(frame: pd.DataFrame) -> pd.DataFrame:
        with np.errstate(over="ignore", invalid="ignore"):
            return frame.groupby(_KEYS, sort=False, as_index=False).agg(
                step=("step", "max"), line=("line", "max"), fsum=("fsum", "sum"), fcount=("fcount", "sum"),
                nf=("nf", "sum"), nfinf=("nfinf", "last"))

    def result(self) -> ParsedLog:
        if self.acc is None or self.acc.empty:
            return ParsedLog(self.fmt, pd.DataFrame(columns=COLUMNS), self.notes, self.raw_points, self.width)
        a = self.acc
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            mean = a["fsum"] / a["fcount"].where(a["fcount"] > 0)
        nonfinite = a["nfinf"].where(a["nfinf"].notna(), np.nan)
        value = mean.where(a["fcount"] > 0, nonfinite)
        frame = pd.DataFrame({"run": a["run"].astype(str), "split": a["split"].astype(str), "step": a["step"].astype(int),
                              "metric": a["metric"].astype(str), "value": value.astype(float), "line": a["line"].astype(int),
                              "n": (a["fcount"] + a["nf"]).astype(int), "nonfinite": a["nf"].astype(int)})
        frame = (frame.assign(_o=frame["run"].map(self.run_order)).sort_values(["_o", "split", "metric", "step"], kind="stable")
                 .drop(columns="_o").reset_index(drop=True))
        if self.width > 1:
            self.note(f"long series reduced to at most {self.max_points} points each: steps averaged in buckets of "
                      f"{self.width} steps ({self.raw_points} logged values)")
        return ParsedLog(self.fmt, frame, self.notes, self.raw_points, self.width)


# --- wide tables (CSV, JSON lines, W&B / Lightning / HF rows) -----------------------------------------


_NAN_TEXT = {"nan", "-nan", "+nan"}


def _numeric(raw: pd.Series, column: str, builder: LogBuilder, line0: int) -> pd.Series:
    """Numbers of a column chunk; empty cells are missing (sparse rows), 'nan'/'inf' are values,
    other text is skipped and noted (the first one named)."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return raw.astype(float)
    present = raw.notna()
    values = pd.to_numeric(raw.where(present), errors="coerce") if len(raw) else raw.astype(float)
    text = raw.astype(str).str.strip().str.lower()
    bad = present & values.isna() & ~text.isin(_NAN_TEXT)
    if bad.any():
        i = bad.idxmax()
        builder.note(f"column '{column}': non-numeric values skipped (first at row {int(i) + line0}: "
                     f"{str(raw[i])[:40]!r})", key=f"text:{column}")
        values = values.mask(bad)
    return values.astype(float)


# W&B's chart export ("Export CSV" of a panel): a column "<run> - <metric>" per run, with
# "<run> - <metric>__MIN"/"__MAX" envelopes of the smoothed line (not read).
_WANDB_CHART = re.compile(r"(.+?) - (.+)")


def _column_of_run(c: str) -> tuple[str | None, tuple[str | None, str | None, int]]:
    m = _WANDB_CHART.fullmatch(c)
    if m:
        name = m.group(2).strip()
        if name.endswith(("__MIN", "__MAX")):
            return None, (None, None, 0)
        if canonical_column(name)[1] is not None:
            return m.group(1).strip(), canonical_column(name)
    return None, canonical_column(c)


class TableMapper:
    """Which columns of a wide table are read and what they mean; column collisions resolved once."""

    def __init__(self, default_run: str):
        self.default_run = default_run
        self.chosen: dict[tuple, tuple[int, str]] = {}  # (run or None, split, metric) -> (rank, column)
        self.seen: dict[str, tuple] = {}
        self.text_only: dict[str, str] = {}  # recognised column -> first text value, while no number seen
        self.numeric: set[str] = set()

    def special(self, cols: list[str]) -> tuple[str | None, str | None, str | None]:
        by_lower = {str(c).strip().lower(): c for c in cols}
        pick = lambda names: next((by_lower[c] for c in names if c in by_lower), None)
        return pick(RUN_COLUMNS), pick(SPLIT_COLUMNS), pick(STEP_COLUMNS)

    def recognised(self, cols: list[str], builder: LogBuilder) -> dict[str, tuple[str | None, str, str | None]]:
        specials = set(self.special(cols))
        out = {}
        for c in cols:
            if c in specials:
                continue
            if c not in self.seen:
                self.seen[c] = _column_of_run(str(c))
            run_of, (split, metric, rank) = self.seen[c]
            if metric is None:
                continue
            key = (run_of, split, metric)
            prev = self.chosen.get(key)
            if prev is None or rank < prev[0]:
                if prev is not None:
                    builder.note(f"column '{prev[1]}' not used: '{c}' gives the same {metric}", key=f"dup:{prev[1]}")
                self.chosen[key] = (rank, c)
            elif prev[1] != c:
                builder.note(f"column '{c}' not used: '{prev[1]}' gives the same {metric}", key=f"dup:{c}")
                continue
            out[c] = (split, metric, run_of)
        return out

    def add(self, df: pd.DataFrame, builder: LogBuilder, line0: int) -> None:
        """One chunk of rows; `line0` is the file line of the chunk's first row (index 0)."""
        cols = list(df.columns)
        run_col, split_col, step_col = self.special(cols)
        wanted = self.recognised(cols, builder)
        df = df.reset_index(drop=True)
        lines = np.arange(len(df), dtype=np.int64) + line0
        if step_col is not None:
            steps = pd.to_numeric(df[step_col], errors="coerce")
            steps = steps.where(np.isfinite(steps) & (steps.abs() < 2**62))
            steps = steps.fillna(pd.Series(lines - line0 + builder.raw_points, index=df.index)).astype(np.int64)
        else:
            steps = pd.Series(lines - 2, index=df.index)
        runs = df[run_col].astype(str) if run_col is not None else self.default_run
        row_split = None
        if split_col is not None:
            row_split = df[split_col].astype(str).str.strip().str.lower().map(lambda s: SPLITS.get(s, s))
        for c, (split, metric, run_of) in wanted.items():
            if self.chosen.get((run_of, split, metric), (0, c))[1] != c:
                continue
            raw = df[c]
            values = _numeric(raw, c, builder, line0)
            ok = values.notna()
            if not pd.api.types.is_numeric_dtype(raw.dtype):
                ok |= raw.notna() & raw.astype(str).str.strip().str.lower().isin(_NAN_TEXT)
            if not ok.any():
                if raw.notna().any() and c not in self.numeric:
                    self.text_only.setdefault(c, str(raw[raw.notna()].iloc[0])[:40])
                continue
            self.numeric.add(c)
            self.text_only.pop(c, None)
            v = values[ok].to_numpy(float)
            if metric == "temperature":
                with np.errstate(divide="ignore"):
                    v, metric = 1.0 / v, "logit_scale"
            elif metric == "log_logit_scale":
                with np.errstate(over="ignore"):
                    v, metric = np.exp(v), "logit_scale"
            if metric.startswith("r@") and np.nanmax(np.where(np.isfinite(v), v, np.nan), initial=0) > 1:
                v = v / 100.0
                builder.note(f"column '{c}': values above 1 read as percentages", key=f"pct:{c}")
            sp = split or "train"
            if metric in ("lr", "logit_scale", "eval_size"):
                sp = split or "all"
            if row_split is not None:
                sp = row_split[ok].where(row_split[ok].notna() & (row_split[ok] != "nan"), sp).to_numpy(object)
            run = run_of if run_of is not None else runs[ok].to_numpy(object) if run_col is not None else runs
            builder.add_long(run, sp, metric,
                             steps[ok].to_numpy(np.int64), v, lines[ok.to_numpy()])

    def check(self, path, fmt: str) -> None:
        if self.text_only:
            c, v = next(iter(self.text_only.items()))
            raise ConfigError(f"{path}: column '{c}' holds text ({v!r}), not numbers; expected numeric {fmt} values")
        if not self.chosen:
            raise ConfigError(f"{path}: no loss or recall columns found in the {fmt} log "
                              f"(columns: {', '.join(map(str, list(self.seen)[:12]))})")


def _r(x: float, digits: int = 4) -> float:
    return float(round(x, digits)) if math.isfinite(x) else x


def _label(metric: str) -> str:
    return "total" if metric == "loss" else metric.removeprefix("loss_").upper() if metric.startswith("loss_") else metric.upper()


def _components(df: pd.DataFrame) -> list[str]:
    return sorted(m for m in df["metric"].unique() if m.startswith("loss_"))


def _wide(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, step) with a column per metric (the last value when logged twice)."""
    return df.pivot_table(index=["split", "step"], columns="metric", values="value", aggfunc="last").reset_index()


def _final(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (split, metric), g in df.sort_values(["step", "line"]).groupby(["split", "metric"], sort=False):
        out.setdefault(split, {})[metric] = float(g["value"].iloc[-1])
    return out


def _final_step(df: pd.DataFrame, split: str) -> int | None:
    d = df[df["split"] == split]
    return int(d["step"].max()) if len(d) else None


