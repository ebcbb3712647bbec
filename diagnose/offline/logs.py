"""Diagnosis from training logs: plain text (the seed's "Training Results Comparison" blocks), CSV,
JSON lines and TensorBoard event files.

Every format is read into one long frame (run, split, step, metric, value) with canonical metric
names: `loss` (the logged total), `loss_<component>` (e.g. loss_clip, loss_mrl), `r@K` (a fraction,
not a percentage). The findings are small functions over that frame, so they do not depend on the
format the numbers came from.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reference_models.config import ConfigError

from ..findings import Finding, sort_findings
from ..rules import IDENTICAL_ATOL

# --- thresholds ----------------------------------------------------------------------------------
# A contrastive (InfoNCE) loss at uniform logits is ln(N) for N candidates per row. Candidate pools
# differ by factors of 2 (batch sizes are powers of two; gathering across ranks multiplies by the
# world size), i.e. by ln 2 = 0.69 nats, so a tolerance of 0.1 nats (~10% in N) never confuses
# 64 with 128. The seed's perceiver run sits 0.004 (train) and 0.048 (val) below ln 128; a run
# that learns leaves it far behind (the seed's direct run: 0.907 = 0.19 x ln 128).
CHANCE_TOL_NATS = 0.1
# exp(loss) is only read as a candidate count when it is at least this large: below 8 candidates a
# "chance" match is a coincidence of any small loss value.
MIN_CANDIDATES = 8
# World sizes tried when the configured batch B does not explain exp(loss): k x B candidates when
# features are gathered across k ranks before the loss (open_clip's gather_with_grad).
WORLD_SIZES = (1, 2, 4, 8, 16, 32, 64)
# Flat loss: the mean of the last third of the logged values within 2% of the first third. The
# seed's perceiver run is flat to the 4th digit (6.06 over 10 epochs) while its working direct run
# fell ~10% (1.24 -> 1.12) over the same span; 2% separates the two with margin.
FLAT_REL_DROP = 0.02
MIN_POINTS_FOR_TREND = 3
# total = sum(w_i L_i) must hold to the rounding of the printed numbers: each of the (1 + n) values
# printed with 4 decimals is off by up to 5e-5, so 5e-4 covers any weights up to ~8; float logs
# (CSV, JSON, TensorBoard) are far tighter and get the relative term (float32 precision x 10).
WEIGHT_ABS_TOL, WEIGHT_REL_TOL = 5e-4, 1e-6
# Loss weights in configs are round numbers (0.25, 0.5, 1.0, 0.1); the least-squares solution is
# snapped to the coarsest of these grids that still reproduces every logged total.
WEIGHT_GRIDS = (0.25, 0.05, 0.01)
# Random ranking over N candidates gives R@K = K/N, linear in K. The implied N = K/R@K agreeing
# within 1.5x across K (the seed: 3333, 2941, 2941 from recalls printed with 2 decimals of a
# percent) is that signature; a model that ranks at all has R@K growing sublinearly in K (a 30% R@1
# model with 75% R@10 implies N = 3.3 vs 13.3, a 4x spread).
RANDOM_RECALL_SPREAD = 1.5
# ...and only while K/N is small (R@K below 50%); near saturation every model's R@K flattens out.
RANDOM_RECALL_MAX = 0.5

# --- canonical metric names ------------------------------------------------------------------------
SPLITS = {"train": "train", "training": "train", "tr": "train", "val": "val", "valid": "val",
          "validation": "val", "eval": "val", "test": "val", "dev": "val"}
TOTAL_NAMES = {"loss", "total", "total_loss", "loss_total", "totalloss", "objective"}
STEP_COLUMNS = ("step", "global_step", "iteration", "iter", "it", "epoch")
RUN_COLUMNS = ("run", "run_name", "name", "model", "experiment")
SPLIT_COLUMNS = ("split", "phase", "mode", "stage")
_NUM = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"


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


def canonical_metric(name: str) -> tuple[str | None, str | None]:
    """(split or None, canonical metric or None when the column is not a loss or a recall)."""
    n = re.sub(r"\s+", "_", str(name).strip().lower())
    split, n = _split_prefix(n)
    n = n.replace("/", "_").replace(".", "_").replace("-", "_")
    if n in TOTAL_NAMES:
        return split, "loss"
    m = re.fullmatch(r"(?:retrieval_)?(?:r|recall)(?:@|_at_|_@_|_|)(\d+)", n.replace("@", "@"))
    if m:
        return split, f"r@{int(m.group(1))}"
    m = re.fullmatch(r"loss_(.+)", n) or re.fullmatch(r"(.+?)_loss", n) or re.fullmatch(r"losses_(.+)", n)
    if m and m.group(1) not in TOTAL_NAMES:
        return split, "loss_" + m.group(1).strip("_")
    return split, None


# --- reading -------------------------------------------------------------------------------------


@dataclass
class ParsedLog:
    format: str
    frame: pd.DataFrame  # run, split, step, metric, value
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[str]:
        return list(dict.fromkeys(self.frame["run"]))


_HEADER = re.compile(r"^\s*#{1,6}\s+(.+?)\s*#*\s*$")
_EPOCH = re.compile(r"\bepoch\s*[:=]?\s*(\d+)(?:\s*/\s*(\d+))?", re.I)
_STEP = re.compile(r"\b(?:step|iter(?:ation)?)\s*[:=]?\s*(\d+)", re.I)
_LOSS = re.compile(rf"\b(?:(?P<split>train(?:ing)?|val(?:idation)?|valid|eval|test)\s+)?loss\s*[:=]\s*(?P<approx>~)?(?P<v>{_NUM})"
                   r"(?:\s*\((?P<parts>[^)]*)\))?", re.I)
_PART = re.compile(rf"([A-Za-z][\w\-/@]*)\s*[:=]\s*(~)?({_NUM})")
_RECALL = re.compile(rf"\bR(?:ecall)?\s*@\s*(\d+)\s*[:=]\s*(~)?({_NUM})\s*(%)?", re.I)


def parse_text(text: str, default_run: str) -> ParsedLog:
    """The seed's plain-text blocks: markdown headers name runs, `Epoch e/E:` sets the step,
    `Train Loss: 6.0602 (CLIP: 4.8481, MRL: 4.8481)`, `Val Loss: ...`, `R@1: 0.03%, R@5: ...`.
    Values printed as approximate (`~0.0`) are not numbers to compute with: they are skipped and
    noted."""
    rows, notes = [], []
    run, epoch, counters = default_run, None, {}

    def add(split: str, metric: str, value: float, lineno: int) -> None:
        key = (run, split, metric)
        step = epoch if epoch is not None else counters.get(key, -1) + 1
        counters[key] = step
        rows.append({"run": run, "split": split, "step": step, "metric": metric, "value": value, "line": lineno})

    for lineno, line in enumerate(text.splitlines(), 1):
        h = _HEADER.match(line)
        if h:
            run, epoch = h.group(1).strip().strip("*").strip(), None
            continue
        e = _EPOCH.search(line)
        if e:
            epoch = int(e.group(1))
        else:
            s = _STEP.search(line)
            if s and _LOSS.search(line):
                epoch = int(s.group(1))
        for m in _LOSS.finditer(line):
            split = SPLITS.get((m.group("split") or "train").lower(), "train")
            if m.group("approx"):
                notes.append(f"line {lineno}: {run}: approximate value '{m.group(0).strip()}' skipped")
                continue
            add(split, "loss", float(m.group("v")), lineno)
            for name, approx, value in _PART.findall(m.group("parts") or ""):
                if approx:
                    continue
                _, metric = canonical_metric(name if name.lower().startswith("loss") else f"loss_{name}")
                if metric:
                    add(split, metric, float(value), lineno)
        for k, approx, value, pct in _RECALL.findall(line):
            if approx:
                notes.append(f"line {lineno}: {run}: approximate R@{k} skipped")
                continue
            add("val", f"r@{int(k)}", float(value) / (100.0 if pct else 1.0), lineno)
    frame = pd.DataFrame(rows, columns=["run", "split", "step", "metric", "value", "line"])
    return ParsedLog("text", frame, notes)


def _flatten(obj: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _from_table(df: pd.DataFrame, fmt: str, default_run: str) -> ParsedLog:
    """Wide rows (one per logged step) -> long frame. Recalls logged in percent (any value > 1)
    are converted to fractions."""
    cols = {c: str(c).strip().lower() for c in df.columns}
    by_lower = {v: k for k, v in cols.items()}
    run_col = next((by_lower[c] for c in RUN_COLUMNS if c in by_lower), None)
    split_col = next((by_lower[c] for c in SPLIT_COLUMNS if c in by_lower), None)
    step_col = next((by_lower[c] for c in STEP_COLUMNS if c in by_lower), None)
    notes, rows = [], []
    metric_cols = {}
    for c in df.columns:
        if c in (run_col, split_col, step_col):
            continue
        split, metric = canonical_metric(c)
        if metric is None:
            continue
        values = pd.to_numeric(df[c], errors="coerce")
        if values.notna().sum() == 0:
            continue
        if metric.startswith("r@") and (values > 1).any():
            values = values / 100.0
            notes.append(f"column '{c}': values above 1 read as percentages")
        metric_cols[c] = (split, metric, values)
    if not metric_cols:
        raise ConfigError(f"no loss or recall columns found in the {fmt} log (columns: {', '.join(map(str, df.columns[:12]))})")
    steps = pd.to_numeric(df[step_col], errors="coerce") if step_col is not None else pd.Series(range(len(df)), index=df.index)
    for c, (split, metric, values) in metric_cols.items():
        for i in df.index[values.notna()]:
            row_split = split
            if split_col is not None and pd.notna(df.at[i, split_col]):
                row_split = SPLITS.get(str(df.at[i, split_col]).strip().lower(), str(df.at[i, split_col]))
            rows.append({"run": str(df.at[i, run_col]) if run_col is not None else default_run,
                         "split": row_split or "train",
                         "step": int(steps[i]) if pd.notna(steps[i]) else int(i),
                         "metric": metric, "value": float(values[i]), "line": int(i) + 2})
    frame = pd.DataFrame(rows, columns=["run", "split", "step", "metric", "value", "line"])
    return ParsedLog(fmt, frame, notes)


def parse_csv(path: Path) -> ParsedLog:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ConfigError(f"{path}: cannot read CSV log ({first[:160]})") from None
    return _from_table(df, "CSV", path.stem)


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


FORMATS = ("auto", "text", "csv", "jsonl", "tensorboard")


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "tensorboard"
    if "tfevents" in name:
        return "tensorboard"
    if name.endswith((".csv", ".csv.gz", ".tsv")):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if b"\x00" in head:
        raise ConfigError(f"{path}: binary file of unknown format; expected a text, CSV, JSON-lines or TensorBoard log")
    first = next((ln for ln in head.decode("utf-8", "replace").splitlines() if ln.strip()), "")
    if first.lstrip().startswith("{"):
        return "jsonl"
    if first.count(",") >= 1 and not re.search(r"loss\s*:", first, re.I) and re.fullmatch(r"[\w/@.\- ,\"]+", first.strip()):
        return "csv"
    return "text"


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
    if fmt == "tensorboard":
        if not _event_files(path):
            raise ConfigError(f"{path}: no TensorBoard event files (events.out.tfevents.*) found")
        parsed = parse_tensorboard(path)
    elif fmt == "csv":
        parsed = parse_csv(path)
    elif fmt == "jsonl":
        parsed = parse_jsonl(path)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text; expected a text, CSV, JSON-lines or TensorBoard log") from None
        parsed = parse_text(text, path.stem)
    if parsed.frame.empty:
        raise ConfigError(f"{path}: no losses or recalls found in the {parsed.format} log "
                          "(expected e.g. 'Train Loss: 6.0602 (CLIP: 4.8481, MRL: 4.8481)' or loss columns)")
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


# --- analysis ------------------------------------------------------------------------------------


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


def _pool_match(loss: float, batch_size: int | None) -> tuple[int, int | None] | None:
    """(candidate count c, world size k or None) with |loss - ln c| <= tol, or None."""
    if not math.isfinite(loss) or loss < math.log(MIN_CANDIDATES) - CHANCE_TOL_NATS:
        return None
    if batch_size:
        pools = [(batch_size * k, k) for k in WORLD_SIZES]
    else:
        pools = [(2**p, None) for p in range(3, 21)]
    c, k = min(pools, key=lambda ck: abs(loss - math.log(ck[0])))
    return (c, k) if abs(loss - math.log(c)) <= CHANCE_TOL_NATS else None


def rule_at_chance(run: str, df: pd.DataFrame, batch_size: int | None) -> list[Finding]:
    final = _final(df)
    comps = _components(df)
    metrics = comps or ["loss"]
    hits, misses = [], []
    for split, values in final.items():
        for m in metrics:
            if m not in values:
                continue
            v = values[m]
            match = _pool_match(v, batch_size)
            entry = {"split": split, "component": m, "value": v, "exp": _r(math.exp(v), 1) if v < 50 else None,
                     "step": _final_step(df, split)}
            if match:
                entry.update(candidates=match[0], ln_candidates=_r(math.log(match[0])))
                if match[1] is not None:
                    entry["world_size"] = match[1]
                hits.append(entry)
            else:
                misses.append(entry)
    if not hits:
        return []
    pools = sorted({h["candidates"] for h in hits})
    c = pools[-1]
    shown = "; ".join(f"{h['split']} {_label(h['component'])} {h['value']:.4f} -> exp = {h['exp']}" for h in hits)
    names = sorted({_label(h['component']) for h in hits})
    msg = (f"{run}: the {' and '.join(names)} loss{'es sit' if len(names) > 1 else ' sits'} at ln N for N ≈ {c} candidates "
           f"({shown}); ln {c} = {math.log(c):.4f}. A contrastive loss at ln N is what uniform logits give: the model "
           f"ranks the positive no better than guessing among {c} candidates.")
    evidence = {"at_chance": hits, "not_at_chance": misses, "tolerance_nats": CHANCE_TOL_NATS}
    total = final.get("train", next(iter(final.values()))).get("loss")
    sum_w_hint = None
    if total is not None and comps:
        sum_w_hint = total / math.log(c)
        evidence["total_over_ln_candidates"] = _r(sum_w_hint)
        msg += (f" The total {total:.4f} = {sum_w_hint:.4f} x ln {c}: every weighted component at chance "
                f"(sum of the loss weights ≈ {sum_w_hint:.2f}).")
    if batch_size:
        k = max(h.get("world_size", 1) for h in hits)
        evidence.update(batch_size=batch_size, ln_batch=_r(math.log(batch_size)))
        if k == 1:
            msg += f" That is the configured batch of {batch_size}: chance is ln {batch_size} = {math.log(batch_size):.4f}."
        else:
            msg += (f" The configured batch is {batch_size}, so each row is scored against {k} x {batch_size} = {c} "
                    f"candidates: features gathered across {k} ranks before the loss (all_gather), or an effective "
                    f"batch of {c} (e.g. a different batch size than configured, or accumulation that concatenates "
                    f"features). Either way chance is ln {c} = {math.log(c):.4f}, not ln {batch_size} = {math.log(batch_size):.4f}.")
    else:
        msg += f" {c} is a power of two, like a batch size: pass --batch-size to check it against the configured batch."
    return [Finding("loss_at_chance", "error", run, msg, evidence,
                    "Check that gradients reach the vision tower and that the logits are not uniform "
                    "(temperature, collapsed embeddings); `diagnose gradflow` measures both.", "")]


def rule_flat(run: str, df: pd.DataFrame) -> list[Finding]:
    out = []
    for split in ("train", "val"):
        s = df[(df["split"] == split) & (df["metric"] == "loss")].sort_values("step").drop_duplicates("step", keep="last")
        if len(s) < MIN_POINTS_FOR_TREND:
            continue
        third = max(1, len(s) // 3)
        first, last = float(s["value"].iloc[:third].mean()), float(s["value"].iloc[-third:].mean())
        drop = (first - last) / abs(first) if first else float("nan")
        if math.isfinite(drop) and drop < FLAT_REL_DROP:
            steps = [int(s["step"].iloc[0]), int(s["step"].iloc[-1])]
            rising = drop < -FLAT_REL_DROP
            out.append(Finding(
                "loss_rising" if rising else "loss_flat", "warning", run,
                f"{run}: the {split} loss {'rose' if rising else 'did not fall'} over {len(s)} logged points "
                f"(steps {steps[0]}-{steps[1]}): mean of the first third {first:.4f}, of the last third {last:.4f} "
                f"({-drop:+.1%}).",
                {"split": split, "points": len(s), "steps": steps, "first_third_mean": _r(first),
                 "last_third_mean": _r(last), "relative_drop": _r(drop), "threshold": FLAT_REL_DROP},
                "Compare the loss with ln(candidates): a flat loss at chance means no learning signal reaches the model.",
                split))
            break  # one flatness finding per run, train first
    return out


def rule_identical(run: str, df: pd.DataFrame) -> list[Finding]:
    comps = _components(df)
    if len(comps) < 2:
        return []
    wide = _wide(df)
    out = []
    for i, a in enumerate(comps):
        for b in comps[i + 1:]:
            both = wide[[a, b, "split", "step"]].dropna()
            if both.empty:
                continue
            diff = (both[a] - both[b]).abs()
            if bool((diff <= IDENTICAL_ATOL + 1e-9 * both[a].abs()).all()):
                rows = [{"split": sp, "step": int(st), a: float(x), b: float(y)}
                        for sp, st, x, y in both[["split", "step", a, b]].itertuples(index=False)]
                at = [math.exp(v) for v in both[a] if v < 50]
                note = ""
                if at and all(MIN_CANDIDATES <= x for x in at) and _pool_match(float(both[a].iloc[-1]), None):
                    note = (" Both sit at ln N: at uniform logits every InfoNCE component equals ln N whatever the "
                            "embedding dimension, so identical values are expected at chance and do not by themselves "
                            "prove a logging bug; in a learning run they would (e.g. the same tensor logged under two "
                            "names, or the sampled MRL dimension being the full one).")
                out.append(Finding(
                    "components_identical", "warning", run,
                    f"{run}: {_label(a)} and {_label(b)} are identical in all {len(both)} logged rows "
                    f"(max |difference| {float(diff.max()):.1e}).{note}",
                    {"components": [a, b], "rows": rows, "max_abs_diff": float(diff.max()), "tolerance": IDENTICAL_ATOL},
                    "Log every component from its own tensor, and the sampled MRL dimension with it.", f"{a}={b}"))
    return out


def _rows(df: pd.DataFrame, comps: list[str]) -> pd.DataFrame:
    wide = _wide(df)
    if "loss" not in wide:
        return pd.DataFrame()
    cols = [c for c in comps if c in wide]
    return wide.dropna(subset=["loss", *cols]) if cols else pd.DataFrame()


def _tol(y: np.ndarray) -> np.ndarray:
    return WEIGHT_ABS_TOL + WEIGHT_REL_TOL * np.abs(y)


def _snap(w: np.ndarray, A: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float | None]:
    for grid in WEIGHT_GRIDS:
        ws = np.round(w / grid) * grid
        if np.all(np.abs(A @ ws - y) <= _tol(y)):
            return ws, grid
    return w, None


def _fmt_w(weights: dict[str, float]) -> str:
    return ", ".join(f"{_label(k)} {v:g}" for k, v in weights.items())


def solve_weights(frames: dict[str, pd.DataFrame]) -> dict | None:
    """Least squares for total = sum_i w_i L_i over every logged row of every run (assuming the runs
    share their loss weights), snapped to round values when those reproduce every row."""
    comps = sorted({c for df in frames.values() for c in _components(df)})
    parts = []
    for run, df in frames.items():
        rows = _rows(df, comps)
        if len(rows) and all(c in rows for c in comps):
            parts.append(rows.assign(run=run))
    if not parts or not comps:
        return None
    rows = pd.concat(parts, ignore_index=True)
    A, y = rows[comps].to_numpy(float), rows["loss"].to_numpy(float)
    rank = int(np.linalg.matrix_rank(A, tol=1e-6 * max(1.0, float(np.abs(A).max()))))
    w, *_ = np.linalg.lstsq(A, y, rcond=None)
    result = {"components": comps, "rows": len(rows), "runs": sorted(rows["run"].unique()), "rank": rank,
              "least_squares": {c: _r(float(x)) for c, x in zip(comps, w)}}
    if rank < len(comps):
        result["identified"] = False
        # with identical columns only the sum of their weights is determined
        result["weight_sum"] = _r(float(np.sum(w)))
        return result
    ws, grid = _snap(w, A, y)
    resid = A @ ws - y
    result.update(identified=True, weights={c: _r(float(x), 6) for c, x in zip(comps, ws)}, grid=grid,
                  max_residual=float(np.abs(resid).max()), fits=bool(np.all(np.abs(resid) <= _tol(y))))
    return result


def check_weights(frames: dict[str, pd.DataFrame], weights: dict[str, float]) -> dict:
    comps_logged = sorted({c for df in frames.values() for c in _components(df)})
    unknown = [k for k in weights if k not in comps_logged]
    if unknown:
        raise ConfigError(f"--weights: {', '.join(k.removeprefix('loss_') for k in unknown)} not among the logged "
                          f"components ({', '.join(c.removeprefix('loss_') for c in comps_logged) or 'none'})")
    comps = list(weights)
    per_run = {}
    for run, df in frames.items():
        rows = _rows(df, comps)
        if not len(rows):
            continue
        A, y = rows[comps].to_numpy(float), rows["loss"].to_numpy(float)
        resid = A @ np.array([weights[c] for c in comps]) - y
        bad = np.abs(resid) > _tol(y)
        per_run[run] = {"rows": len(rows), "max_residual": _r(float(np.abs(resid).max()), 6), "fits": not bool(bad.any()),
                        "worst": {"split": rows["split"].iloc[int(np.argmax(np.abs(resid)))],
                                  "step": int(rows["step"].iloc[int(np.argmax(np.abs(resid)))]),
                                  "total": float(y[int(np.argmax(np.abs(resid)))]),
                                  "weighted_sum": _r(float((A @ np.array([weights[c] for c in comps]))[int(np.argmax(np.abs(resid)))]), 6)}}
    return {"weights": weights, "per_run": per_run}


def rule_weights(frames: dict[str, pd.DataFrame], given: dict[str, float] | None) -> list[Finding]:
    if given:
        check = check_weights(frames, given)
        out = []
        for run, r in check["per_run"].items():
            if r["fits"]:
                out.append(Finding("loss_weights", "info", run,
                                   f"{run}: the logged total equals {' + '.join(f'{w:g}·{_label(c)}' for c, w in given.items())} "
                                   f"in all {r['rows']} rows (max residual {r['max_residual']:.1e}).",
                                   {"weights": given, **r}))
            else:
                wst = r["worst"]
                out.append(Finding(
                    "loss_weights_mismatch", "warning", run,
                    f"{run}: the logged total is not {' + '.join(f'{w:g}·{_label(c)}' for c, w in given.items())}: at "
                    f"{wst['split']} step {wst['step']} the total is {wst['total']:.4f} but the weighted sum is "
                    f"{wst['weighted_sum']:.4f}. Either the weights differ from these, or a logged component is not the "
                    "value the total was computed from.",
                    {"weights": given, **r}, "Log each component from the tensor that enters the total."))
        return out
    solved = solve_weights(frames)
    if solved is None:
        return []
    run = ", ".join(solved["runs"])
    if not solved["identified"]:
        return [Finding(
            "loss_weights", "info", run,
            f"The logged components are linearly dependent over the {solved['rows']} logged rows (identical components), "
            f"so only the sum of their weights is determined: {' + '.join('w_' + _label(c) for c in solved['components'])} "
            f"≈ {solved['weight_sum']:.4f}. Pass --weights to check specific values, or give a log of a run whose "
            "components differ.", solved)]
    w = solved["weights"]
    if solved["fits"]:
        eq = " + ".join(f"{v:g}·{_label(c)}" for c, v in w.items() if v != 0)
        unused = [c for c, v in w.items() if v == 0]
        msg = (f"total = {eq} reproduces every logged total ({solved['rows']} rows over {len(solved['runs'])} run(s), "
               f"assuming they share their weights; max residual {solved['max_residual']:.1e}, within the rounding of the "
               f"printed numbers). Least-squares solution before rounding: {_fmt_w(solved['least_squares'])}.")
        if unused:
            msg += f" {', '.join(_label(c) for c in unused)} is logged but not part of the total."
        return [Finding("loss_weights", "info", run, msg, solved)]
    return [Finding(
        "loss_weights_inconsistent", "warning", run,
        f"No single set of weights reproduces the logged totals (least squares {_fmt_w(solved['least_squares'])}, "
        f"max residual {solved['max_residual']:.2e}): the runs use different weights, or a logged component is not "
        "what the total was computed from. Check each run with --weights.", solved)]


def rule_recall(run: str, df: pd.DataFrame) -> list[Finding]:
    final = _final(df)
    out = []
    for split, values in final.items():
        recalls = sorted(((int(m[2:]), v) for m, v in values.items() if m.startswith("r@")), key=lambda kv: kv[0])
        if len(recalls) < 2 or any(v <= 0 or v >= RANDOM_RECALL_MAX for _, v in recalls):
            continue
        implied = {k: k / v for k, v in recalls}
        spread = max(implied.values()) / min(implied.values())
        if spread > RANDOM_RECALL_SPREAD:
            continue
        n = float(np.exp(np.mean(np.log(list(implied.values())))))
        shown = ", ".join(f"R@{k} {v:.2%} -> N ≈ {k / v:.0f}" for k, v in recalls)
        out.append(Finding(
            "recall_at_random", "error", run,
            f"{run}: retrieval recall grows linearly in K, as random ranking does (R@K = K/N): {shown}. That is random "
            f"ranking over a pool of about {n:.0f} candidates (presumably the evaluation set size); the embeddings carry no "
            "retrieval signal.",
            {"split": split, "step": _final_step(df, split), "recall": {f"r@{k}": v for k, v in recalls},
             "implied_pool": {f"r@{k}": _r(N, 1) for k, N in implied.items()}, "pool_estimate": round(n),
             "spread": _r(spread, 3), "max_spread": RANDOM_RECALL_SPREAD},
            "Compare with chance K/N for your evaluation set size; diagnose the loss first.", split))
    return out


def analyse(parsed: ParsedLog, batch_size: int | None = None, weights: dict[str, float] | None = None) -> tuple[list[dict], list[Finding]]:
    """Runs (summary.json schema) and findings for a parsed log."""
    if batch_size is not None and batch_size < 2:
        raise ConfigError(f"--batch-size {batch_size}: expected at least 2")
    frames = {run: parsed.frame[parsed.frame["run"] == run] for run in parsed.runs}
    findings: list[Finding] = []
    runs = []
    for run, df in frames.items():
        findings += rule_at_chance(run, df, batch_size) + rule_flat(run, df) + rule_identical(run, df) + rule_recall(run, df)
        final = _final(df)
        main = final.get("train") or next(iter(final.values()))
        val = final.get("val", {})
        retrieval = {m: v for m, v in {**main, **val}.items() if m.startswith("r@")}
        runs.append({
            "name": run, "config": None, "scale": None, "steps": int(df["step"].max()) if len(df) else None,
            "batch_size": batch_size, "chance_loss": _r(math.log(batch_size)) if batch_size else None,
            "final_loss": {k: v for k, v in main.items() if k.startswith("loss")},
            "final_val_loss": {k: v for k, v in val.items() if k.startswith("loss")},
            "retrieval": retrieval, "points": int(df[["split", "step"]].drop_duplicates().shape[0]),
        })
    findings += rule_weights(frames, weights)
    return runs, sort_findings(findings)
