"""Seed-replicated runs: every config repeated over K seeds (data order and init), on an executor, and
the per-seed outcomes counted ("learned on 2/3 seeds").

A verdict from one seed can be a coin flip (a small proxy that collapses on some seeds); `--seeds K`
runs seeds s, s+1, ..., s+K-1 and the report gives, per config, every seed's loss against ln(B), its
held-out R@1 and its verdict, and the count. The first seed's run keeps the config's name; the others
are named `<name> (seed S)`. Replicas (every seed but the first) stop once their verdict is settled
(`runs.SettleCallback`: learned with a 2x margin, or the live error alarms for a loss at chance and
collapsed embeddings); the first seed always runs its full length.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import pandas as pd

from .executors import Failed, Job, SerialExecutor
from .summary import RunSummary, Summary


def seed_list(first: int, k: int) -> list[int]:
    return [first + i for i in range(k)]


def seeded_name(name: str, seed: int, first: int) -> str:
    return name if seed == first else f"{name} (seed {seed})"


def with_seed(cfg, seed: int):
    out = copy.deepcopy(cfg)
    out.seed = seed
    return out


def instrumented_job(cfg, steps: int, device: str, name: str, checkpoint: str | None = None,
                     settle: bool = False) -> tuple[dict, pd.DataFrame]:
    """One instrumented run in a worker process or a Ray task: its summary and records come back. A
    replica (`settle`) stops once its verdict is settled (`runs.SettleCallback`)."""
    from .runs import model_from_checkpoint, run_instrumented

    model = model_from_checkpoint(cfg, checkpoint) if checkpoint is not None else None
    run, records = run_instrumented(cfg, steps, device, name=name, model=model, settle=settle)
    return run.summary().to_dict(), records.assign(run=name)


def run_seeded(configs: Sequence[tuple[Any, str]], seeds: Sequence[int], steps: int, device: str,
               executor: SerialExecutor, on_done: Callable[[str, Any], object] | None = None,
               checkpoint: str | None = None) -> tuple[Summary, pd.DataFrame, dict[str, str]]:
    """Every (config, name) over `seeds`; returns the summary of the runs that finished (findings and root
    causes derived), their records, and {run name: error line} of those that failed."""
    from .analysis import analyse
    from .runs import command_line, environment

    groups = {name: [seeded_name(name, s, seeds[0]) for s in seeds] for _, name in configs}
    jobs = [Job(seeded_name(name, s, seeds[0]), instrumented_job,
                (with_seed(cfg, s), steps, device, seeded_name(name, s, seeds[0]), checkpoint, s != seeds[0]))
            for cfg, name in configs for s in seeds]
    results = executor.run(jobs, on_done=on_done)
    failed = {n: r.error for n, r in results.items() if isinstance(r, Failed)}
    names = [j.name for j in jobs if j.name not in failed]
    records = pd.concat([results[n][1] for n in names], ignore_index=True) if names else pd.DataFrame()
    summary = Summary([RunSummary.from_dict(results[n][0]) for n in names], command=command_line(), environment=environment())
    summary = analyse(summary, records)
    if len(seeds) > 1:
        summary.sections["seeds"] = {label: {"runs": names} for label, names in groups.items()}
        refresh_seed_section(summary)
    return summary, records, failed


def refresh_seed_section(summary: Summary) -> None:
    """Recount the per-seed outcomes from the runs' current verdicts (also when a report is rebuilt)."""
    groups = summary.sections.get("seeds")
    if isinstance(groups, dict) and groups:
        summary.sections["seeds"] = seed_section(summary.to_dict()["runs"], {k: list(v["runs"]) for k, v in groups.items()})


def _row(run: dict) -> dict:
    v, r = run.get("verdict") or {}, run.get("retrieval") or {}
    return {"run": run["name"], "seed": run.get("seed"), "loss_clip": (run.get("final_loss") or {}).get("loss_clip"),
            "ln_B": run.get("chance_loss"), "loss_over_lnB": v.get("loss_over_chance"), "r@1": r.get("r@1"),
            "chance@1": r.get("chance@1"), "label": v.get("label"), "learned": bool(v.get("learned")),
            "steps": run.get("steps"), "settled": (run.get("settled") or {}).get("why")}


def seed_section(runs: list[dict], groups: dict[str, list[str]]) -> dict:
    """{config name: {"runs": [...], "learned": n, "seeds": k, "agree": bool, "rows": [per-seed numbers]}}."""
    by_name = {r["name"]: r for r in runs}
    out = {}
    for label, names in groups.items():
        rows = [_row(by_name[n]) for n in names if n in by_name]
        learned = sum(r["learned"] for r in rows)
        out[label] = {"runs": names, "seeds": len(rows), "learned": learned, "agree": learned in (0, len(rows)),
                      "rows": rows}
    return out


def count_line(label: str, group: dict) -> str:
    k, n = group["seeds"], group["learned"]
    text = f"{label}: learned on {n}/{k} seeds"
    if not group["agree"]:
        text += " (the seeds disagree: the verdict of one seed is not to be trusted)"
    return text
