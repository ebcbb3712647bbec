"""A parsed log -> run summaries (kind "logs") and findings from the log rules of the catalogue."""

from __future__ import annotations

import math

import pandas as pd

from ..errors import ConfigError
from ..findings import sort_finding_dicts
from ..logframe import ParsedLog, final_values, rounded
from ..rules import RunContext, rank_root_causes, run_rules
from ..summary import RunSummary


def _run_summary(run: str, df, batch_size: int | None) -> RunSummary:
    final = final_values(df)
    main = final.get("train") or next((v for k, v in final.items() if k != "all"), {})
    val = final.get("val", {})
    return RunSummary(
        name=run, kind="logs", steps=int(df["step"].max()) if len(df) else None, batch_size=batch_size,
        candidates=batch_size, chance_loss=rounded(math.log(batch_size)) if batch_size else None,
        final_loss={k: v for k, v in main.items() if k.startswith("loss")},
        retrieval={m: v for m, v in {**main, **val}.items() if m.startswith("r@")},
        extra={"final_val_loss": {k: v for k, v in val.items() if k.startswith("loss")},
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


def analyse(parsed: ParsedLog, batch_size: int | None = None, weights: dict[str, float] | None = None,
            eval_size: int | None = None) -> tuple[list[RunSummary], list[dict]]:
    """Runs and findings (sorted dicts) for a parsed log; each run's root causes from its own findings."""
    if batch_size is not None and batch_size < 2:
        raise ConfigError(f"--batch-size {batch_size}: expected at least 2")
    if eval_size is not None and eval_size < 2:
        raise ConfigError(f"--eval-size {eval_size}: expected at least 2 evaluation pairs")
    frames = {run: _with_eval_size(parsed.frame[parsed.frame["run"] == run], run, eval_size) for run in parsed.runs}
    runs, findings = [], []
    for run, df in frames.items():
        found = [f.to_dict() for f in run_rules(df, RunContext(run, batch_size, batch_size), kind="logs")]
        summary = _run_summary(run, df, batch_size)
        summary.root_causes = rank_root_causes(found)
        runs.append(summary)
        findings += found
    name = ", ".join(frames)
    findings += [f.to_dict() for f in run_rules(frames, RunContext(name, weights=weights or {}), kind="log_set")]
    return runs, sort_finding_dicts(findings)
