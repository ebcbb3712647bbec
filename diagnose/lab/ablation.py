"""Ablation: the baseline, each hypothesis' fix alone, all fixes together, and (when no single fix
restores learning) a greedy search for a minimal set of fixes. Every run uses the same data and seed.

Verdicts (numbers written beside each):
  confirmed     the fix alone makes the run learn (final CLIP loss < 0.5 ln B and held-out R@1 >= 10x
                chance, the margins of `diagnose.core.definitions`); `mechanism` says whether the probes moved the
                way the claim says, so a fix that helps for another reason is reported as such.
  refuted       the fix alone leaves the run not learning, and the fix is not needed by the minimal
                set that restores learning (or, for claims decided without a run, the measurement
                contradicts the claim).
  inconclusive  the fix alone helps partly, or is needed only together with other fixes, or the
                baseline already learns (nothing to explain).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from reference_models import AlignmentConfig, config_from_dict

from ..core.analysis import analyse_run
from ..core.errors import ConfigError
from ..core.seed_counts import refresh_seed_section
from ..core.summary import RunSummary, Summary
from .executors import Failed, Job, SerialExecutor, make_executor
from .hypotheses import KNOWN_IDS, Hypothesis, catalogue
from .runs import run_instrumented
from .seeds import seeded_name, with_seed


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


def _one_run(cfg: AlignmentConfig, name: str, sets: list[str], steps: int, device: str,
             expensive_every: int, settle: bool = False) -> tuple[dict, pd.DataFrame]:
    """One instrumented run; module-level so a worker process or a Ray task can execute it. Seed
    replicas (`settle`) stop once their verdict is settled (`runs.SettleCallback`)."""
    run, recs = run_instrumented(_with(cfg, sets), steps, device, name=name, expensive_every=expensive_every,
                                 settle=settle)
    summary = run.summary(kind="ablation")
    summary.overrides = sets
    return summary.to_dict(), recs.assign(run=name)


class BaselineFailed(RuntimeError):
    """The baseline run failed: there is nothing to compare the fixes with."""


def run_ablation(cfg: AlignmentConfig, steps: int, device: str, only: list[str] | None = None,
                 progress: Callable[[str, object], object] | None = None, expensive_every: int = 10,
                 workers: int = 1, executor: SerialExecutor | None = None, seeds: list[int] | None = None) -> Ablation:
    """Runs go to `executor` (default: `workers` local processes on CPU, this process otherwise).

    `seeds` (default: the config's seed alone) repeats the baseline and every fix run on each seed; a
    hypothesis is confirmed (refuted) only when the runs of a majority of the seeds say so, and the
    report gives the count. The catalogue and the minimal-set search come from the first seed.

    `progress(name, result)` is called as each run finishes, with its summary dict or a `Failed`. A run
    that fails is reported in `summary.sections["ablation"]["failed_runs"]` and the others go on; a
    failed baseline raises `BaselineFailed`."""
    own = executor is None
    if own:
        executor = make_executor("local", workers if device == "cpu" else 1)
    try:
        return _ablate(cfg, steps, device, only, progress, expensive_every, executor, seeds or [cfg.seed])
    finally:
        if own:
            executor.close()


def _check_only(only: list[str] | None, hyps: list[Hypothesis] | None = None) -> None:
    if hyps is None and only and set(only) - set(KNOWN_IDS):
        raise ConfigError(f"--fix: unknown hypothesis {', '.join(sorted(set(only) - set(KNOWN_IDS)))}; known: "
                          f"{', '.join(KNOWN_IDS)}")
    if hyps is not None and only and set(only) - {h.id for h in hyps}:
        unknown = sorted(set(only) - {h.id for h in hyps})
        raise ConfigError(f"--fix: unknown or not applicable {', '.join(unknown)}; available: "
                          f"{', '.join(h.id for h in hyps)}")


def _ablate(cfg, steps, device, only, progress, expensive_every, executor: SerialExecutor,
            seeds: list[int]) -> Ablation:
    # over 60 lines: the ablation's steps in their order (baseline, each fix, all fixes, minimal-set search,
    # verdicts), each a few lines over the same runs and records
    _check_only(only)
    first = seeds[0]
    runs: dict[str, dict] = {}  # by run name: "fix:x" for the first seed, "fix:x (seed 1)" for the others
    failed: dict[str, str] = {}
    frames: dict[str, pd.DataFrame] = {}
    submitted: list[str] = []  # the report lists runs in this order, whichever finished first
    replicated: list[str] = []  # job names run on every seed

    def done(name: str, result) -> None:
        if isinstance(result, Failed):
            failed[name] = result.error
        else:
            runs[name], frames[name] = result
        if progress:
            progress(name, runs.get(name) or result)

    def execute_many(jobs: list[tuple[str, list[str]]], every_seed: bool = False) -> list[dict | None]:
        """Run what has not run yet; returns the first seed's run of each job (None: it failed)."""
        todo = [(seeded_name(n, sd, first), sets, sd) for n, sets in dict(jobs).items()
                for sd in (seeds if every_seed else [first])]
        todo = [t for t in todo if t[0] not in runs and t[0] not in failed]
        submitted.extend(t[0] for t in todo)
        replicated.extend(n for n, _ in jobs if every_seed)
        executor.run([Job(full, _one_run, (with_seed(cfg, sd), full, sets, steps, device, expensive_every, sd != first))
                      for full, sets, sd in todo], on_done=done)
        return [runs.get(n) for n, _ in jobs]

    base = execute_many([("baseline", [])], every_seed=True)[0]
    if base is None:
        raise BaselineFailed(f"the baseline run failed: {failed['baseline']}")
    base_findings = analyse_run(RunSummary.from_dict(base), frames["baseline"])
    hyps = catalogue(cfg, base_findings, steps)
    if only:
        _check_only(only, hyps)
        hyps = [h for h in hyps if h.id in only or not h.fix]
    with_run = [h for h in hyps if h.fix]
    jobs = [(f"fix:{h.id}", h.fix) for h in with_run]
    if len(with_run) > 1:
        jobs.append(("all fixes", [s for h in with_run for s in h.fix]))
    execute_many(jobs, every_seed=True)
    search = {"needed": False, "runs": 0, "set": [], "learned": None}
    single_ok = [h.id for h in with_run if f"fix:{h.id}" in runs and runs[f"fix:{h.id}"]["verdict"]["learned"]]
    if not base["verdict"]["learned"] and not single_ok and with_run:
        search = _greedy(with_run, runs, execute_many)
    order = [n for n in submitted if n in runs]
    records = pd.concat([frames[n] for n in order],
                        ignore_index=True)[["run", "step", "probe", "target", "metric", "value"]]
    hypotheses = _decide_over_seeds(hyps, runs, failed, records, search, seeds)
    run_list = [RunSummary.from_dict(runs[n]) for n in order]
    findings = []
    for run in run_list:  # every run gets its verdict and root causes; the findings shown are the baseline's
        found = analyse_run(run, records[records["run"] == run.name])
        findings += found if run.name == "baseline" else []
    summary = Summary(run_list, findings, hypotheses, sections={"ablation": {
        "baseline_learned": base["verdict"]["learned"], "steps": steps, "scale": cfg.scale, "runs_executed": len(runs),
        "seeds": list(seeds), "executor": executor.name, "complete": not failed, "failed_runs": dict(failed),
        "single_fixes_that_restore_learning": single_ok, "minimal_set_search": search}})
    if len(seeds) > 1:
        summary.sections["seeds"] = {n: {"runs": [seeded_name(n, sd, first) for sd in seeds]}
                                     for n in dict.fromkeys(replicated)}
        refresh_seed_section(summary)
    return Ablation(summary, records)


def _decide_over_seeds(hyps, runs, failed, records, search, seeds) -> list[dict]:
    """Each hypothesis decided on every seed's runs, then by majority over the seeds."""
    first = seeds[0]
    per_seed: dict[str, list[tuple[int, dict]]] = {h.id: [] for h in hyps}
    for sd in seeds:
        view = {n: runs[full] for n in {"baseline", *(f"fix:{h.id}" for h in hyps)}
                if (full := seeded_name(n, sd, first)) in runs}
        lost = {n: failed[full] for n in {"baseline", *(f"fix:{h.id}" for h in hyps)}
                if (full := seeded_name(n, sd, first)) in failed}
        for h in hyps:
            if "baseline" in view:
                d = _decide(h, view["baseline"], view, records, search if sd == first else {}, lost)
            else:
                d = _failed(h, f"the seed's baseline run failed: {lost['baseline']}", None)
            per_seed[h.id].append((sd, d))
    return [combine_seeds(per_seed[h.id]) for h in hyps]


VERDICTS = ("confirmed", "refuted", "not restored", "inconclusive", "failed")


def combine_seeds(per_seed: list[tuple[int, dict]]) -> dict:
    """Confirmed only by a majority of all seeds. Refuted when a majority did not learn with the fix and
    at least one of them ran its full length and refutes it (a replica stopped early, `not restored`,
    cannot tell refuted from a late partial improvement); otherwise inconclusive."""
    first = per_seed[0][1]
    if len(per_seed) == 1:
        return first
    k = len(per_seed)
    counts = {v: sum(d["verdict"] == v for _, d in per_seed) for v in VERDICTS}
    if counts["confirmed"] * 2 > k:
        verdict = "confirmed"
    elif (counts["refuted"] + counts["not restored"]) * 2 > k and counts["refuted"]:
        verdict = "refuted"
    else:
        verdict = "failed" if counts["failed"] == k else "inconclusive"
    agree = len({"not learned" if d["verdict"] in ("refuted",
                                                   "not restored") else d["verdict"] for _, d in per_seed}) == 1
    tally = "; ".join(f"{v} on {n}/{k} seeds" for v, n in counts.items() if n)
    note = "" if agree else (" (the seeds disagree: no majority)" if verdict == "inconclusive" else " (the seeds "
                                                                                                    "disagree)")
    out = dict(first, verdict=verdict)
    out["seeds"] = {"counts": counts, "agree": agree, "tally": tally + note,
                    "per_seed": [{"seed": sd, "verdict": d["verdict"],
                                  "fix": d.get("evidence", {}).get("fix")} for sd, d in per_seed]}
    out["summary"] = f"{tally}{note}. First seed ({per_seed[0][0]}): {first.get('summary', '')}"
    return out


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
            if d is None:  # the run failed: this combination cannot be judged
                continue
            score = d["verdict"]["loss_over_chance"] if d["verdict"]["loss_over_chance"] is not None else math.inf
            if score < best_score:
                best, best_score, best_run = h, score, d
        if best is None:  # every candidate diverged: take them in catalogue order
            best, best_run = remaining[0], runs.get(jobs[0][0])
        if best_run is None:  # every candidate run failed: the search stops, incomplete
            break
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
    return {"run": run["name"], "loss_clip": round(run["final_loss"]["loss_clip"], 4),
            "ln_B": round(run["chance_loss"], 4),
            "loss_over_lnB": round(run["verdict"]["loss_over_chance"],
                                   4) if run["verdict"]["loss_over_chance"] is not None else None,
            "r@1": round(r["r@1"], 4), "chance@1": round(r["chance@1"], 5), "label": run["verdict"]["label"],
            **({"steps": run["steps"], "settled": run["settled"]["why"]} if run.get("settled") else {})}


def _head(h: Hypothesis) -> dict:
    return {"id": h.id, "claim": h.claim, "source": h.source, "fix": h.fix, "fix_text": h.fix_text,
            "mechanism_claimed": h.mechanism}


def _failed(h: Hypothesis, reason: str, base: dict | None) -> dict:
    return dict(_head(h), verdict="failed", mechanism="not measured", reason=reason,
                evidence={"baseline": _numbers(base) if base else None, "error": reason},
                summary=f"not decided: {reason}")


def _mechanism(mech: dict) -> str:
    """Whether the probes moved the way the claim says."""
    return "as claimed" if mech["supports"] else ("contradicted" if mech["supports"] is False else "not measurable")


def _decide(h: Hypothesis, base: dict, runs: dict, records: pd.DataFrame, search: dict, failed: dict[str, str]) -> dict:
    base_recs = records[records["run"] == base["name"]]
    out = _head(h)
    if not h.fix:  # decided from the baseline's own measurements
        mech = h.check(base_recs, base_recs, base, base) if h.check else {"supports": None, "numbers": {}, "text": ""}
        out["verdict"] = {True: "confirmed", False: "refuted", None: "inconclusive"}[mech["supports"]]
        out["evidence"] = {"mechanism": mech["numbers"], "baseline": _numbers(base)}
        out["summary"] = mech["text"]
        out["mechanism"] = _mechanism(mech)
        return out
    if f"fix:{h.id}" in failed:
        return _failed(h, f"the run with the fix failed: {failed[f'fix:{h.id}']}", base)
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
        v, why = "inconclusive", (f"the fix alone does not restore learning, but the minimal set {search['set']} "
                                  "needs it")
    elif fixed["verdict"]["label"].startswith("partly"):
        v, why = "inconclusive", "the fix alone moves the loss below chance but short of the learning margin"
    else:
        v, why = "refuted", "the fix alone leaves the run not learning"
        if (fixed.get("settled") or {}).get("why", "").startswith("failed"):
            # a replica stopped once at chance and collapsed: it did not learn by then, but a slow partial
            # improvement later (which would make the verdict inconclusive) is not excluded
            v, why = "not restored", (f"the fix alone did not restore learning by step {fixed['steps']}, where the "
                                      "replica stopped (settled)")
    mechanism = _mechanism(mech)
    if v == "confirmed" and mech["supports"] is False:
        why += ", but not through the claimed mechanism (the probes did not move the way the claim says)"
    out.update({"verdict": v, "mechanism": mechanism, "reason": why,
                "evidence": {"baseline": _numbers(base), "fix": _numbers(fixed), "mechanism": mech["numbers"]},
                "summary": f"{why}: loss {fixed['final_loss']['loss_clip']:.3f} vs ln(B) {fixed['chance_loss']:.3f} "
                           f"(baseline {base['final_loss']['loss_clip']:.3f}); R@1 {fixed['retrieval']['r@1']:.4f} "
                           "vs chance "
                           f"{fixed['retrieval']['chance@1']:.4f}. Mechanism {mechanism}: {mech['text']}"})
    return out
