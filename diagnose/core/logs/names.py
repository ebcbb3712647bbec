"""Canonical metric names of a training log: whatever a logger calls a column or a tag, the log frame
(`diagnose.core.logframe`) gets `total`, `loss_<component>`, `r@K`, `lr`, `logit_scale` or `eval_size`.

Loss names are the ones `diagnose.watch` records (`diagnose.engine.watcher.canonical_name`), so a loss
has one name in a watch report, in a TensorBoard read-back and in a CSV read-back: components are
`loss_<name>`, the objective is `total` when there are components, and a lone loss is the contrastive
loss, `loss_contrastive` (`canonical_losses`, applied to every reader's frame by `read_log`)."""

from __future__ import annotations

import functools
import re

# --- canonical metric names ------------------------------------------------------------------------
SPLITS = {"train": "train", "training": "train", "tr": "train", "val": "val", "valid": "val",
          "validation": "val", "eval": "val", "test": "val", "dev": "val"}
TOTAL_NAMES = {"loss", "total", "total_loss", "loss_total", "totalloss", "objective"}
# While a log is read, its total is `loss` (`READ_TOTAL`); `canonical_losses` names it once the run's
# components are known: `total` beside components (`TOTAL`), else the lone loss `LONE_LOSS`.
READ_TOTAL, TOTAL, LONE_LOSS = "loss", "total", "loss_contrastive"
STEP_COLUMNS = ("step", "global_step", "_step", "iteration", "iter", "it", "epoch")  # _step: W&B history
RUN_COLUMNS = ("run", "run_name", "name", "model", "experiment")
SPLIT_COLUMNS = ("split", "phase", "mode", "stage")
NUMBER = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"


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
    ev = _evidence(n) or _evidence(_split_prefix(n)[1])  # 'train/logit_scale', 'lr-AdamW/pg1'
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
    if metric in ("lr", "learning_rate") and probe != "optimizer":  # the per-group lr stays a record
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


def canonical_losses(frame):
    """The read total of each run (`READ_TOTAL`) named as `diagnose.watch` names it: `total` in a run that
    also logs components (`loss_<name>`), `loss_contrastive` in a run whose only loss it is."""
    is_total = frame["metric"] == READ_TOTAL
    if not is_total.any():
        return frame
    with_components = set(frame.loc[frame["metric"].str.startswith("loss_"), "run"])
    renamed = frame["run"].isin(with_components).map({True: TOTAL, False: LONE_LOSS})
    frame = frame.copy()
    frame.loc[is_total, "metric"] = renamed[is_total]
    return frame
