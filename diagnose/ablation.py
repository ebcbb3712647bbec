"""Ablation: the baseline, each hypothesis' fix alone, all fixes together, and (when no single fix
restores learning) a greedy search for a minimal set of fixes. Every run uses the same data and seed.

Verdicts (numbers written beside each):
  confirmed     the fix alone makes the run learn (final CLIP loss < 0.5 ln B and held-out R@1 >= 10x
                chance, the margins of `verdict.py`); `mechanism` says whether the probes moved the
                way the claim says, so a fix that helps for another reason is reported as such.
  refuted       the fix alone leaves the run not learning, and the fix is not needed by the minimal
                set that restores learning (or, for claims decided without a run, the measurement
                contradicts the claim).
  inconclusive  the fix alone helps partly, or is needed only together with other fixes, or the
                baseline already learns (nothing to explain).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from reference_models import AlignmentConfig, config_from_dict

from .analysis import analyse_run
from .hypotheses import KNOWN_IDS, Hypothesis, catalogue
from .runs import run_instrumented
from .summary import RunSummary, Summary


@dataclass
class Ablation:
    summary: Summary
    records: pd.DataFrame


def _with(cfg: AlignmentConfig, sets: list[str]) -> AlignmentConfig:
    data = cfg.to_dict()
    scale = data.pop("scale")
    # the fixes are written at the config's own scale: apply them to the already-scaled config
    out = config_from_dict(data, f"{cfg.name} + fix", sets)
    out.scale = scale
    out.name = cfg.name
    return out


def _one_run(cfg: AlignmentConfig, name: str, sets: list[str], steps: int, device: str, expensive_every: int,
             threads: int | None) -> tuple[dict, pd.DataFrame]:
    """One instrumented run; module-level so a worker process can execute it."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    run, recs = run_instrumented(_with(cfg, sets), steps, device, name=name, expensive_every=expensive_every)
    summary = run.summary(kind="ablation")
    summary.overrides = sets
    return summary.to_dict(), recs.assign(run=name)


def run_ablation(cfg: AlignmentConfig, steps: int, device: str, only: list[str] | None = None,
                 progress: Callable[[str], object] | None = None, expensive_every: int = 10,
                 workers: int = 1) -> Ablation:
    """`workers` > 1 runs independent runs in that many processes (one thread each share the cores)."""
    runs: dict[str, dict] = {}
    frames: list[pd.DataFrame] = []
    pool = None
    if workers > 1 and device == "cpu":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        import signal

        # spawn, not fork: forking a process that already ran torch's thread pools can deadlock.
        # Workers ignore SIGINT: Ctrl-C reaches the whole process group, and the driver alone
        # reports it (one line), instead of every worker printing a traceback
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                   initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
    threads = max(1, (os.cpu_count() or 1) // workers) if pool else None
    try:
        return _ablate(cfg, steps, device, only, progress, expensive_every, runs, frames, pool, threads)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _ablate(cfg, steps, device, only, progress, expensive_every, runs, frames, pool, threads) -> Ablation:
    if only and set(only) - set(KNOWN_IDS):
        from reference_models import ConfigError

        raise ConfigError(f"--fix: unknown hypothesis {', '.join(sorted(set(only) - set(KNOWN_IDS)))}; known: {', '.join(KNOWN_IDS)}")

    def execute_many(jobs: list[tuple[str, list[str]]]) -> list[dict]:
        todo = [(n, s) for n, s in dict(jobs).items() if n not in runs]
        for name, _ in todo:
            if progress:
                progress(name)
        args = [(cfg, n, s, steps, device, expensive_every, threads) for n, s in todo]
        results = list(pool.map(_one_run, *zip(*args))) if pool is not None and len(args) > 1 else [_one_run(*a) for a in args]
        for (name, _), (d, recs) in zip(todo, results):
            runs[name] = d
            frames.append(recs)
        return [runs[n] for n, _ in jobs]

    def execute(name: str, sets: list[str]) -> dict:
        return execute_many([(name, sets)])[0]

    base = execute("baseline", [])
    base_findings = analyse_run(RunSummary.from_dict(base), pd.concat(frames, ignore_index=True))
    hyps = catalogue(cfg, base_findings, steps)
    if only:
        unknown = sorted(set(only) - {h.id for h in hyps})
        if unknown:
            from reference_models import ConfigError

            raise ConfigError(f"--fix: unknown or not applicable {', '.join(unknown)}; available: {', '.join(h.id for h in hyps)}")
        hyps = [h for h in hyps if h.id in only or not h.fix]
    with_run = [h for h in hyps if h.fix]
    jobs = [(f"fix:{h.id}", h.fix) for h in with_run]
    if len(with_run) > 1:
        jobs.append(("all fixes", [s for h in with_run for s in h.fix]))
    execute_many(jobs)
    search = {"needed": False, "runs": 0, "set": [], "learned": None}
    single_ok = [h.id for h in with_run if runs[f"fix:{h.id}"]["verdict"]["learned"]]
    if not base["verdict"]["learned"] and not single_ok and with_run:
        search = _greedy(with_run, runs, execute_many)
    records = pd.concat(frames, ignore_index=True)[["run", "step", "probe", "target", "metric", "value"]]
    hypotheses = [_decide(h, base, runs, records, search) for h in hyps]
    run_list = [RunSummary.from_dict(r) for r in runs.values()]
    findings = []
    for run in run_list:  # every run gets its verdict and root causes; the findings shown are the baseline's
        found = analyse_run(run, records[records["run"] == run.name])
        findings += found if run.name == "baseline" else []
    summary = Summary(run_list, findings, hypotheses, sections={"ablation": {
        "baseline_learned": base["verdict"]["learned"], "steps": steps, "scale": cfg.scale, "runs_executed": len(runs),
        "single_fixes_that_restore_learning": single_ok, "minimal_set_search": search}})
    return Ablation(summary, records)


def _greedy(hyps: list[Hypothesis], runs: dict, execute_many) -> dict:
    """Add, one at a time, the fix whose combined run has the lowest final CLIP loss / ln(B)."""
    chosen: list[Hypothesis] = []
    remaining = list(hyps)
    executed_before = len(runs)
    trail = []
    while remaining:
        best, best_score, best_run = None, math.inf, None
        jobs = []
        for h in remaining:
            combo = chosen + [h]
            jobs.append(("fix:" + "+".join(x.id for x in combo), [s for x in combo for s in x.fix]))
        for h, d in zip(remaining, execute_many(jobs)):
            score = d["verdict"]["loss_over_chance"] if d["verdict"]["loss_over_chance"] is not None else math.inf
            if score < best_score:
                best, best_score, best_run = h, score, d
        if best is None:  # every candidate diverged: take them in catalogue order
            best, best_run = remaining[0], runs[jobs[0][0]]
        chosen.append(best)
        remaining.remove(best)
        trail.append({"added": best.id, "run": best_run["name"], "loss_over_lnB": round(best_score, 4),
                      "learned": best_run["verdict"]["learned"]})
        if best_run["verdict"]["learned"]:
            return {"needed": True, "set": [h.id for h in chosen], "learned": True, "trail": trail,
                    "runs": len(runs) - executed_before}
    return {"needed": True, "set": [h.id for h in chosen], "learned": False, "trail": trail,
            "runs": len(runs) - executed_before}


def _numbers(run: dict) -> dict:
    r = run["retrieval"]
    return {"run": run["name"], "loss_clip": round(run["final_loss"]["loss_clip"], 4), "ln_B": round(run["chance_loss"], 4),
            "loss_over_lnB": round(run["verdict"]["loss_over_chance"], 4) if run["verdict"]["loss_over_chance"] is not None else None,
            "r@1": round(r["r@1"], 4), "chance@1": round(r["chance@1"], 5), "label": run["verdict"]["label"]}


def _decide(h: Hypothesis, base: dict, runs: dict, records: pd.DataFrame, search: dict) -> dict:
    base_recs = records[records["run"] == "baseline"]
    out = {"id": h.id, "claim": h.claim, "source": h.source, "fix": h.fix, "fix_text": h.fix_text,
           "mechanism_claimed": h.mechanism}
    if not h.fix:  # decided from the baseline's own measurements
        mech = h.check(base_recs, base_recs, base, base) if h.check else {"supports": None, "numbers": {}, "text": ""}
        out["verdict"] = {True: "confirmed", False: "refuted", None: "inconclusive"}[mech["supports"]]
        out["evidence"] = {"mechanism": mech["numbers"], "baseline": _numbers(base)}
        out["summary"] = mech["text"]
        out["mechanism"] = "as claimed" if mech["supports"] else ("contradicted" if mech["supports"] is False else "not measurable")
        return out
    fixed = runs[f"fix:{h.id}"]
    fixed_recs = records[records["run"] == fixed["name"]]
    mech = h.check(base_recs, fixed_recs, base, fixed) if h.check else {"supports": None, "numbers": {}, "text": ""}
    learned, base_learned = fixed["verdict"]["learned"], base["verdict"]["learned"]
    needed_jointly = search.get("learned") and h.id in search.get("set", [])
    if base_learned:
        v, why = "inconclusive", "the baseline already learns: there is no failure for this fix to explain"
    elif learned:
        v, why = "confirmed", "the fix alone makes the run learn"
    elif needed_jointly:
        v, why = "inconclusive", f"the fix alone does not restore learning, but the minimal set {search['set']} needs it"
    elif fixed["verdict"]["label"].startswith("partly"):
        v, why = "inconclusive", "the fix alone moves the loss below chance but short of the learning margin"
    else:
        v, why = "refuted", "the fix alone leaves the run not learning"
    mechanism = "as claimed" if mech["supports"] else ("contradicted" if mech["supports"] is False else "not measurable")
    if v == "confirmed" and mech["supports"] is False:
        why += ", but not through the claimed mechanism (the probes did not move the way the claim says)"
    out.update({"verdict": v, "mechanism": mechanism, "reason": why,
                "evidence": {"baseline": _numbers(base), "fix": _numbers(fixed), "mechanism": mech["numbers"]},
                "summary": f"{why}: loss {fixed['final_loss']['loss_clip']:.3f} vs ln(B) {fixed['chance_loss']:.3f} "
                           f"(baseline {base['final_loss']['loss_clip']:.3f}); R@1 {fixed['retrieval']['r@1']:.4f} vs chance "
                           f"{fixed['retrieval']['chance@1']:.4f}. Mechanism {mechanism}: {mech['text']}"})
    return out
