"""The seed's plain-text log blocks (markdown headers name runs, `Epoch e/E:` lines, `Train Loss: 6.06 (CLIP: ...)`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..logframe import ParsedLog
from .builder import LogBuilder
from .names import NUMBER, SPLITS, canonical_metric

NAME = "text"

_HEADER = re.compile(r"^\s*#{1,6}\s+(.+?)\s*#*\s*$")
_EPOCH = re.compile(r"\bepoch\s*[:=]?\s*(\d+)(?:\s*/\s*(\d+))?", re.I)
_STEP = re.compile(r"\b(?:step|iter(?:ation)?)\s*[:=]?\s*(\d+)", re.I)
_LOSS = re.compile(rf"\b(?:(?P<split>train(?:ing)?|val(?:idation)?|valid|eval|test)\s+)?loss\s*[:=]\s*"
                   rf"(?P<approx>~)?(?P<v>{NUMBER})"
                   r"(?:\s*\((?P<parts>[^)]*)\))?", re.I)
_PART = re.compile(rf"([A-Za-z][\w\-/@]*)\s*[:=]\s*(~)?({NUMBER})")
_RECALL = re.compile(rf"\bR(?:ecall)?\s*@\s*(\d+)\s*[:=]\s*(~)?({NUMBER})\s*(%)?", re.I)


# Lines are parsed one at a time and flushed to the reducer in chunks: memory does not grow with the file.
CHUNK_ROWS = 200_000


def parse_lines(lines, default_run: str) -> ParsedLog:
    """The seed's plain-text blocks: markdown headers name runs, `Epoch e/E:` sets the step,
    `Train Loss: 6.0602 (CLIP: 4.8481, MRL: 4.8481)`, `Val Loss: ...`, `R@1: 0.03%, R@5: ...`.
    Values printed as approximate (`~0.0`) are not numbers to compute with: they are skipped and
    noted. One pass, cheap substring tests before each regular expression (a 200 MB log is millions
    of lines)."""
    # over 60 lines: one pass whose per-run state (run, epoch, counters, column buffers) lives in locals;
    # split into functions it would be passed back and forth on every one of millions of lines
    builder = LogBuilder("text")
    runs, splits, steps, metrics, values, linenos = [], [], [], [], [], []
    run, epoch, counters, part_names = default_run, None, {}, {}

    def flush() -> None:
        if values:
            builder.add_long(np.array(runs, dtype=object), np.array(splits, dtype=object),
                             np.array(metrics, dtype=object),
                             np.array(steps), np.array(values), np.array(linenos))
            for col in (runs, splits, steps, metrics, values, linenos):
                col.clear()

    def add(split: str, metric: str, value: float, lineno: int) -> None:
        key = (run, split, metric)
        step = epoch if epoch is not None else counters.get(key, -1) + 1
        counters[key] = step
        runs.append(run), splits.append(split), steps.append(step), metrics.append(metric)
        values.append(value), linenos.append(lineno)

    for lineno, line in enumerate(lines, 1):
        has_loss = "oss" in line or "OSS" in line
        has_epoch = "poch" in line or "POCH" in line
        if not (has_loss or has_epoch or "@" in line or "#" in line):
            continue
        if "#" in line:
            h = _HEADER.match(line)
            if h:
                run, epoch = h.group(1).strip().strip("*").strip(), None
                continue
        e = _EPOCH.search(line) if has_epoch else None
        if e:
            epoch = int(e.group(1))
        losses = list(_LOSS.finditer(line)) if has_loss else []
        if losses and not e:
            st = _STEP.search(line)
            if st:
                epoch = int(st.group(1))
        for m in losses:
            split = SPLITS.get((m.group("split") or "train").lower(), "train")
            if m.group("approx"):
                builder.note(f"line {lineno}: {run}: approximate value '{m.group(0).strip()}' skipped")
                continue
            add(split, "loss", float(m.group("v")), lineno)
            parts = m.group("parts")
            if parts:
                for name, approx, value in _PART.findall(parts):
                    metric = part_names.get(name)
                    if metric is None:
                        key = name if name.lower().startswith("loss") else f"loss_{name}"
                        metric = part_names[name] = canonical_metric(key)[1] or ""
                    if metric and not approx:
                        add(split, metric, float(value), lineno)
        if "@" in line:
            for k, approx, value, pct in _RECALL.findall(line):
                if approx:
                    builder.note(f"line {lineno}: {run}: approximate R@{k} skipped")
                    continue
                add("val", f"r@{int(k)}", float(value) / (100.0 if pct else 1.0), lineno)
        if len(values) >= CHUNK_ROWS:
            flush()
    flush()
    return builder.result()


def parse_text(text: str, default_run: str) -> ParsedLog:
    return parse_lines(text.splitlines(), default_run)


def sniff(path: Path, head: str | None) -> int:
    """The fallback: any text file (1 = by content, the lowest claim)."""
    return 1 if head is not None else 0


def read(path: Path) -> ParsedLog:
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_lines(fh, path.stem)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; expected a text, CSV, JSON-lines or TensorBoard log") from None
