"""From run summaries and records to verdicts, findings and ranked root causes (pure; no files)."""

from __future__ import annotations

import math

import pandas as pd

from .findings import sort_finding_dicts
from .rules import rank_root_causes, run_rules
from .rules.base import collect_failures, finite, series, window
from .summary import RunSummary, Summary

# Findings that read the level of the logged loss (at chance, above it, far short of the margin): when the logged
# loss is shown not to be the loss of the logits it is logged with, they describe that number, not the model.
LOGGED_LEVEL = frozenset({"loss_at_chance", "loss_above_chance", "not_learned_far_short"})


# Error findings that show the logged loss is not the loss of the logits observed with it (not tracking them, a
# constant factor, a sum over micro-batches).
LOG_MISSTATED = ("loss_logged_not_tracking", "loss_logged_scaled", "loss_logged_summed", "loss_logged_two_scales")


def _misstated(found: list[dict], records: pd.DataFrame) -> tuple[dict, float] | None:
    """The first finding that shows the log misstated, and the logits' own cross-entropy over the end window."""
    f = next((f for i in LOG_MISSTATED for f in found if f["id"] == i and f["severity"] == "error"), None)
    if f is None:
        return None
    own = f["evidence"].get("own_end")
    if own is None:
        values = finite(series(records, "contrastive", "logits", "loss_diagonal"))
        own = float(window(values).mean()) if len(values) else None
    return (f, float(own)) if own is not None and math.isfinite(own) else None


def _about_the_log(found: list[dict], why: str) -> list[dict]:
    """LOGGED_LEVEL findings as info notes about the logged number (they implicate no cause)."""
    return [{**f, "severity": "info", "message": f"About the logged value only ({why}: it is not the loss of the "
             "observed logits): " + f["message"]} if f["id"] in LOGGED_LEVEL else f for f in found]


def analyse_run(run: RunSummary, records: pd.DataFrame) -> list[dict]:
    """Verdict, findings and root causes of one run from its own records; returns its finding dicts."""
    verdict = run.judge()
    ctx = run.context()
    with collect_failures() as failed:
        found = [f.to_dict() for f in run_rules(records, ctx)]
    misstated = _misstated(found, records)
    if verdict is not None and misstated:  # judged on the logits' own cross-entropy, not the misstated log
        verdict = run.judge(misstated[1], f"the logits' own cross-entropy; the logged loss misstates it: "
                            f"{misstated[0]['id']}")
    if verdict is not None:  # the verdict rules read the run's end (held-out retrieval is not in the records)
        with collect_failures() as more:
            found = sort_finding_dicts(found + [f.to_dict() for f in run_rules(run.to_dict(), ctx, kind="verdict")])
        failed += more
    run.extra.pop("rule_failures", None)  # a rebuild re-derives them
    if failed:  # the report says which rules' findings are missing (`reports.markdown.root_cause_lines`)
        run.extra["rule_failures"] = failed
    if misstated:
        found = _about_the_log(found, misstated[0]["id"])
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
