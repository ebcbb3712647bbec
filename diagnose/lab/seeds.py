"""Seed-replicated runs: every config repeated over K seeds (data order and init), on an executor, and
the per-seed outcomes counted ("learned on 2/3 seeds").

A verdict from one seed can be a coin flip (a small proxy that collapses on some seeds); `--seeds K`
runs seeds s, s+1, ..., s+K-1 and the report gives, per config, every seed's loss against ln(B), its
held-out R@1 and its verdict, and the count. The first seed's run keeps the config's name; the others
are named `<name> (seed S)`. Replicas (every seed but the first) stop once their verdict is settled
(`diagnose.lab.runs.SettleCallback`: learned with a 2x margin, or the live error alarms for a loss at chance and
collapsed embeddings); the first seed always runs its full length.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import pandas as pd

from ..core.analysis import analyse
from ..core.provenance import command_line
from ..core.seed_counts import refresh_seed_section
from ..core.summary import RunSummary, Summary
from .executors import Failed, Job, SerialExecutor
from .runs import model_from_checkpoint, run_environment, run_instrumented


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
    model = model_from_checkpoint(cfg, checkpoint) if checkpoint is not None else None
    run, records = run_instrumented(cfg, steps, device, name=name, model=model, settle=settle)
    return run.summary().to_dict(), records.assign(run=name)


def run_seeded(configs: Sequence[tuple[Any, str]], seeds: Sequence[int], steps: int, device: str,
               executor: SerialExecutor, on_done: Callable[[str, Any], object] | None = None,
               checkpoint: str | None = None) -> tuple[Summary, pd.DataFrame, dict[str, str]]:
    """Every (config, name) over `seeds`; returns the summary of the runs that finished (findings and root
    causes derived), their records, and {run name: error line} of those that failed."""
    groups = {name: [seeded_name(name, s, seeds[0]) for s in seeds] for _, name in configs}
    jobs = [Job(seeded_name(name, s, seeds[0]), instrumented_job,
                (with_seed(cfg, s), steps, device, seeded_name(name, s, seeds[0]), checkpoint, s != seeds[0]))
            for cfg, name in configs for s in seeds]
    results = executor.run(jobs, on_done=on_done)
    failed = {n: r.error for n, r in results.items() if isinstance(r, Failed)}
    names = [j.name for j in jobs if j.name not in failed]
    records = pd.concat([results[n][1] for n in names], ignore_index=True) if names else pd.DataFrame()
    summary = Summary([RunSummary.from_dict(results[n][0]) for n in names], command=command_line(),
                      environment=run_environment([results[n][0] for n in names]))
    summary = analyse(summary, records)
    if len(seeds) > 1:
        summary.sections["seeds"] = {label: {"runs": names} for label, names in groups.items()}
        refresh_seed_section(summary)
    return summary, records, failed
