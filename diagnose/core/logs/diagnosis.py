"""A parsed log -> run summaries (kind "logs") and findings from the log rules of the catalogue.

A TensorBoard log written by our own sink (`tensorboard.RecordedLog`) also holds the watched run's probe
records and alarms: the record rules run on those records as they would on the run directory, an alarm
that the records read back do not reproduce (the sink writes at most `max_scalars` rows per step) is
kept as the finding it was, and a log-rule finding measured again by a record rule gives way to it.
Where no finding names a cause of a failed run, the run's causes say so on one line and name the
commands that can tell the causes apart (`LOG_LIMIT`)."""

from __future__ import annotations

import math

import pandas as pd

from ..definitions import end_start
from ..errors import ConfigError
from ..findings import sort_finding_dicts
from ..logframe import ParsedLog, final_values, rounded
from ..rules import RunContext, declarations, rank_root_causes, run_rules
from ..summary import DEFAULT_MAX_LOGIT_SCALE, RunSummary
from .names import TOTAL

# Shown in place of a root cause when a log shows a failure but no finding names its cause: a log holds
# the losses (and perhaps the lr and logit scale), not the gradients, activations or pairing of the data
# that separate the causes of a loss at ln N.
LOG_LIMIT = ("a log cannot tell its causes apart (a cut gradient path, misaligned pairs, a soft temperature and "
             "collapsed embeddings all leave the loss at ln N): ")
WATCH_OR_ABLATE = ("run `diagnose.watch` on the training loop to measure them, or `diagnose ablate -- python "
                   "train.py` to test them one at a time")
ABLATE = "run `diagnose ablate -- python train.py` to test them one at a time"


def _run_summary(run: str, df, batch_size: int | None) -> RunSummary:
    final = final_values(df)
    main = final.get("train") or next((v for k, v in final.items() if k != "all"), {})
    val = final.get("val", {})
    return RunSummary(
        name=run, kind="logs", steps=int(df["step"].max()) if len(df) else None, batch_size=batch_size,
        candidates=batch_size, chance_loss=rounded(math.log(batch_size)) if batch_size else None,
        final_loss={k: v for k, v in main.items() if k.startswith("loss") or k == TOTAL},
        retrieval={m: v for m, v in {**main, **val}.items() if m.startswith("r@")},
        extra={"final_val_loss": {k: v for k, v in val.items() if k.startswith("loss") or k == TOTAL},
               "points": int(df[["split", "step"]].drop_duplicates().shape[0]),
               "logged_values": int(df["n"].sum()) if "n" in df else None,
               "evidence": {m: float(df.loc[df["metric"] == m, "value"].iloc[-1])
                            for m in ("lr", "logit_scale", "eval_size") if (df["metric"] == m).any()}})


def _with_eval_size(df: pd.DataFrame, run: str, eval_size: int | None) -> pd.DataFrame:
    """--eval-size as one more logged value of the run (a logged eval_size column works the same)."""
    if eval_size is None:
        return df
    row = {"run": run, "split": "all", "step": int(df["step"].max()) if len(df) else 0, "metric": "eval_size",
           "value": float(eval_size), "line": 0, "n": 1, "nonfinite": 0}
    return pd.concat([df[df["metric"] != "eval_size"], pd.DataFrame([row])], ignore_index=True)


def current_records(records: pd.DataFrame) -> pd.DataFrame:
    """The read-back series that reach the run's end-of-run window. The sink writes at most `max_scalars`
    rows per written step, lowest-priority probes last, so a series can stop long before the run does; its
    own "end of run" would then be an earlier time than the loss's, and a rule comparing the two (the loss
    on the diagonal vs the loss, collapse vs the loss) would compare different moments of the run."""
    steps = sorted(set(records["step"]))
    cut = steps[end_start(steps)] if steps else 0
    last = records.groupby(["probe", "target", "metric"], sort=False)["step"].transform("max")
    return records[last >= cut]


def _record_findings(found: list[dict], records: pd.DataFrame, ctx: RunContext, notes: list[str]) -> list[dict]:
    """The record rules on a watched run's records read back from the log; a log-rule finding whose id a
    record rule also emits for this run gives way to it (the same condition, measured on the records)."""
    if records.empty:
        return found
    kept = current_records(records)
    stale = records[["probe", "target", "metric"]].drop_duplicates().shape[0] - \
        kept[["probe", "target", "metric"]].drop_duplicates().shape[0]
    if stale:
        notes.append(f"{ctx.name}: {stale} read-back series stop before the end of the run (the sink's "
                         "max_scalars per written step): not read by the record rules")
    records = kept
    size = records[(records["probe"] == "loss_split") & (records["target"] == "extras")
                   & (records["metric"] == "batch_size")]["value"]
    pool = ctx.batch_size or (int(size.iloc[-1]) if len(size) and size.iloc[-1] >= 2 else None)
    lr = records[(records["probe"] == "optimizer") & (records["metric"] == "lr")]["value"]
    rctx = RunContext(ctx.name, pool, pool, DEFAULT_MAX_LOGIT_SCALE,
                      optimizer={"lr": float(lr.iloc[0])} if len(lr) else {})
    measured = [f.to_dict() for f in run_rules(records.drop(columns="run"), rctx, kind="records")]
    ids = {f["id"] for f in measured}
    return [f for f in found if f["id"] not in ids] + measured


def _alarm_findings(found: list[dict], alarms: list[dict]) -> list[dict]:
    """Alarms the watch raised during the run (its `diagnose/alarms` texts): evidence with their step."""
    declared = declarations()
    for a in alarms:
        same = next((f for f in found if f["id"] == a["id"] and (f.get("target") or "") == a["target"]), None)
        if same is not None:
            same["evidence"].setdefault("alarm_step", a["step"])
        elif a["id"] in declared and a["severity"] in declared[a["id"]].severities:
            found.append({"id": a["id"], "severity": a["severity"], "run": a["run"],
                          "message": f"alarm raised by diagnose.watch at step {a['step']}: {a['message']}",
                          "evidence": {"alarm_step": a["step"], "source": "diagnose/alarms"},
                          "next_step": "", "target": a["target"]})
    return found


def _causes(found: list[dict], recorded: bool) -> list[dict]:
    """Ranked causes; a failed run (an error finding) whose best cause is no mechanism or measured cause
    is headed by one line saying that the log cannot tell the causes apart, and what can."""
    ranked = rank_root_causes(found)
    if any(f["severity"] == "error" for f in found) and (not ranked or ranked[0]["tier"] >= 3):
        ranked = [{"cause": "unexplained", "title": "the log shows the failure, not its cause", "tier": 5,
                   "severity": "error", "fix": LOG_LIMIT + (ABLATE if recorded else WATCH_OR_ABLATE), "findings": [],
                   "role": "unexplained"}] + ranked
    return ranked


def analyse(parsed: ParsedLog, batch_size: int | None = None, weights: dict[str, float] | None = None,
            eval_size: int | None = None) -> tuple[list[RunSummary], list[dict]]:
    """Runs and findings (sorted dicts) for a parsed log; each run's root causes from its own findings."""
    if batch_size is not None and batch_size < 2:
        raise ConfigError(f"--batch-size {batch_size}: expected at least 2")
    if eval_size is not None and eval_size < 2:
        raise ConfigError(f"--eval-size {eval_size}: expected at least 2 evaluation pairs")
    frames = {run: _with_eval_size(parsed.frame[parsed.frame["run"] == run], run, eval_size) for run in parsed.runs}
    records = getattr(parsed, "records", None)
    alarms = getattr(parsed, "alarms", [])
    runs, findings = [], []
    for run, df in frames.items():
        ctx = RunContext(run, batch_size, batch_size)
        found = [f.to_dict() for f in run_rules(df, ctx, kind="logs")]
        own = records[records["run"] == run] if records is not None and len(records) else pd.DataFrame()
        found = _record_findings(found, own, ctx, parsed.notes)
        found = _alarm_findings(found, [a for a in alarms if a["run"] == run])
        summary = _run_summary(run, df, batch_size)
        summary.root_causes = _causes(found, recorded=not own.empty)
        runs.append(summary)
        findings += found
    name = ", ".join(frames)
    findings += [f.to_dict() for f in run_rules(frames, RunContext(name, weights=weights or {}), kind="log_set")]
    return runs, sort_finding_dicts(findings)
