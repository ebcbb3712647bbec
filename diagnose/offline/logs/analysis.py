"""A parsed log -> run summaries (kind "logs") and findings from the log rules of the catalogue."""

from __future__ import annotations

import math

from reference_models.config import ConfigError

from ...findings import sort_finding_dicts
from ...rules import rank_root_causes
from ...rules import RunContext, run_rules
from ...summary import RunSummary
from .frame import ParsedLog, _final, _r


def _run_summary(run: str, df, batch_size: int | None) -> RunSummary:
    final = _final(df)
    main = final.get("train") or next(iter(final.values()))
    val = final.get("val", {})
    return RunSummary(
        name=run, kind="logs", steps=int(df["step"].max()) if len(df) else None, batch_size=batch_size,
        candidates=batch_size, chance_loss=_r(math.log(batch_size)) if batch_size else None,
        final_loss={k: v for k, v in main.items() if k.startswith("loss")},
        retrieval={m: v for m, v in {**main, **val}.items() if m.startswith("r@")},
        extra={"final_val_loss": {k: v for k, v in val.items() if k.startswith("loss")},
               "points": int(df[["split", "step"]].drop_duplicates().shape[0])})


def analyse(parsed: ParsedLog, batch_size: int | None = None, weights: dict[str, float] | None = None
            ) -> tuple[list[RunSummary], list[dict]]:
    """Runs and findings (sorted dicts) for a parsed log; each run's root causes from its own findings."""
    if batch_size is not None and batch_size < 2:
        raise ConfigError(f"--batch-size {batch_size}: expected at least 2")
    frames = {run: parsed.frame[parsed.frame["run"] == run] for run in parsed.runs}
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
