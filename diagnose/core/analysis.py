"""From run summaries and records to verdicts, findings and ranked root causes (pure; no files)."""

from __future__ import annotations

import pandas as pd

from .findings import sort_finding_dicts
from .rules import rank_root_causes, run_rules
from .summary import RunSummary, Summary


def analyse_run(run: RunSummary, records: pd.DataFrame) -> list[dict]:
    """Verdict, findings and root causes of one run from its own records; returns its finding dicts."""
    verdict = run.judge()
    ctx = run.context()
    found = [f.to_dict() for f in run_rules(records, ctx)]
    if verdict is not None:  # the verdict rules read the run's end (held-out retrieval is not in the records)
        found = sort_finding_dicts(found + [f.to_dict() for f in run_rules(run.to_dict(), ctx, kind="verdict")])
    run.root_causes = rank_root_causes(found, verdict and {"learned": verdict.learned})
    if verdict is not None and verdict.learned:
        # the verdict and the causes agree: a run that learned with an error cause under it says so
        errors = [c for c in run.root_causes if c["severity"] == "error"]
        if errors:
            verdict.label = f"{verdict.label}, but with an error cause: {errors[0]['cause']} ({errors[0]['title']})"
    return found


def analyse(summary: Summary, records: pd.DataFrame) -> Summary:
    """Re-derive every run's verdict, findings and root causes from the records (a `run` column)."""
    findings = []
    by_run = dict(tuple(records.groupby("run", sort=False))) if len(records) else {}
    empty = records.iloc[0:0]
    for run in summary.runs:
        findings += analyse_run(run, by_run.get(run.name, empty))
    summary.findings = sort_finding_dicts(findings)
    return summary
