"""Real faults in code we did not write: does `diagnose.watch` name the cause people found in public threads?

Each `case_*.py` beside this file is a short training script (peer-library models: flamingo-pytorch,
perceiver-pytorch, transformers CLIP from a tiny config, an MRL head) that reproduces a failure reported
in a public issue thread (cited in the file) and states its ground truth: the root cause id
(`diagnose.rules.causes`) a correct diagnosis names. `healthy.py` gives runs without a fault (different
models, seeds, batch sizes) to count false alarms.

Each script is run twice in this process, one torch thread: once with `no_watch` (the same loop with no
probes) and once under `diagnose.watch` (alarm policy "off": alarms are only recorded), and the ratio of
their wall times is the probe overhead. What is reported comes from the watched run only: the ranked root
causes of the whole run, the step of the first *error* alarm raised online, and the verdict.

Prints one JSON object: per case top-3 causes, first error alarm step, verdict, overhead ratio; totals:
top-1 and top-3 accuracy, detection rate (an error alarm raised during the run), median optimizer steps
to detection, error findings (and alarms) on healthy runs, wall time, machine.

Usage: python benchmarks/real_faults/run.py [--fast] [--only NAME ...] [--no-healthy] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

# a few cases, one per model family, that the CI test runs (tests/benchmarks/test_real_faults_fast.py)
REPS = 2  # timing repetitions per script (the findings come from the last watched run; runs are seeded)
FAST = ("case_text_tower_no_grad", "case_latents_ones", "case_mrl_sum_logged", "case_softmax_over_batch")


def case_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("case_*.py"))


def _timed(train, factory, **kwargs) -> float:
    t0 = time.perf_counter()
    train(factory, **kwargs)
    return time.perf_counter() - t0


def measure(train, name: str, **kwargs) -> dict:
    """Run `train(watch, **kwargs)` without and with `diagnose.watch`; what the watched run found.

    Timing and findings: `watch` as a user gets it (online rules within their default budget, 2% of the
    step time; on these ~15 ms toy steps that spaces evaluations ~150 steps apart). Detection: one more
    watched run with `budget=None`, the rules evaluated every 5 steps whatever it costs, which measures
    when the rules can tell, not when a budget lets them look; both alarm steps are reported."""
    import diagnose
    from common import no_watch

    held = {}

    def factory(model, optimizer, budget=DEFAULT, **kw):
        held["w"] = diagnose.watch(model, optimizer, out=None, name=name, alarm="off",
                                   **({} if budget is DEFAULT else {"budget": budget}), **kw)
        return held["w"]

    # plain and watched alternate, the faster of two each: the first run of a process pays one-off costs
    plain, watched = float("inf"), float("inf")
    for _ in range(REPS):
        plain = min(plain, _timed(train, no_watch, **kwargs))
        watched = min(watched, _timed(train, factory, **kwargs))
    w = held["w"]
    run = w.result().to_dict()["runs"][0]
    findings = w.result().to_dict()["findings"]
    budgeted = _first_error(w)
    train(lambda model, optimizer, **kw: factory(model, optimizer, budget=None, **kw), **kwargs)
    every5 = _first_error(held["w"])
    return {
        "top3": [c["cause"] for c in run["root_causes"][:3]],
        "first_error_alarm_step": every5[0], "first_error_alarm": every5[1],
        "first_error_alarm_step_default_budget": budgeted[0], "first_error_alarm_default_budget": budgeted[1],
        "verdict": (run.get("verdict") or {}).get("label"),
        "error_findings": sorted({f["id"] for f in findings if f["severity"] == "error"}),
        "warning_findings": sorted({f["id"] for f in findings if f["severity"] == "warning"}),
        "steps": run["steps"],
        "seconds_plain": round(plain, 3), "seconds_watched": round(watched, 3),
        "overhead_ratio": round(watched / plain, 3) if plain > 0 else None,
    }


DEFAULT = object()  # watch's own default evaluation budget


def _first_error(w) -> tuple[int | None, str | None]:
    errors = [a for a in w.alarms if a.finding.severity == "error"]
    return (errors[0].step, errors[0].finding.id) if errors else (None, None)


def run_case(name: str) -> dict:
    mod = importlib.import_module(name)
    out = measure(mod.train, name)
    truth = mod.CAUSE
    out = {"case": name, "threads": list(mod.THREADS), "ground_truth": truth, **out}
    out["top1_correct"] = bool(out["top3"]) and out["top3"][0] == truth
    out["top3_correct"] = truth in out["top3"]
    out["detected"] = out["first_error_alarm_step"] is not None
    out["detected_default_budget"] = out["first_error_alarm_step_default_budget"] is not None
    return out


def run_healthy(spec: dict) -> dict:
    import healthy

    out = measure(healthy.train, f"healthy-{spec['model']}-s{spec['seed']}-b{spec['batch']}", **spec)
    keys = ("top3", "first_error_alarm_step", "first_error_alarm", "first_error_alarm_step_default_budget", "verdict",
            "error_findings", "warning_findings", "overhead_ratio")
    return {"run": spec, **{k: out[k] for k in keys}}


def totals(cases: list[dict], healthy_runs: list[dict]) -> dict:
    n = len(cases)
    steps = [c["first_error_alarm_step"] + 1 for c in cases if c["detected"]]  # optimizer steps taken so far
    budget_steps = [c["first_error_alarm_step_default_budget"] + 1 for c in cases if c["detected_default_budget"]]
    ratios = [c["overhead_ratio"] for c in cases if c["overhead_ratio"]]
    return {
        "cases": n,
        "top1": round(sum(c["top1_correct"] for c in cases) / n, 3) if n else None,
        "top3": round(sum(c["top3_correct"] for c in cases) / n, 3) if n else None,
        "detection_rate": round(sum(c["detected"] for c in cases) / n, 3) if n else None,
        "median_steps_to_detection": statistics.median(steps) if steps else None,
        "detection_rate_default_budget": round(sum(c["detected_default_budget"] for c in cases) / n, 3) if n else None,
        "median_steps_to_detection_default_budget": statistics.median(budget_steps) if budget_steps else None,
        "misses": [c["case"] for c in cases if not c["top1_correct"] or not c["detected"]],
        "healthy_runs": len(healthy_runs),
        "healthy_learned": sum(bool(h["verdict"] and h["verdict"].startswith("learned")) for h in healthy_runs),
        "healthy_error_findings": sum(len(h["error_findings"]) for h in healthy_runs),
        "healthy_runs_with_error_alarm": sum(h["first_error_alarm_step"] is not None
                                             or h["first_error_alarm_step_default_budget"] is not None for h in healthy_runs),
        "overhead_ratio_median": statistics.median(ratios) if ratios else None,
        "overhead_ratio_max": max(ratios) if ratios else None,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help=f"only {', '.join(FAST)} and 4 healthy runs (CI)")
    ap.add_argument("--only", nargs="*", help="case names (case_*.py stems)")
    ap.add_argument("--no-healthy", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    import healthy

    names = args.only or (list(FAST) if args.fast else case_names())
    unknown = sorted(set(names) - set(case_names()))
    if unknown:
        print(f"--only: unknown case(s) {', '.join(unknown)}; expected one of {', '.join(case_names())}", file=sys.stderr)
        raise SystemExit(2)
    t0 = time.perf_counter()
    cases = [run_case(n) for n in names]
    specs = [] if args.no_healthy else (healthy.SPECS[::5] if args.fast else healthy.SPECS)
    healthy_runs = [run_healthy(s) for s in specs]
    result = {"totals": totals(cases, healthy_runs), "cases": cases, "healthy": healthy_runs,
              "seconds": round(time.perf_counter() - t0, 1),
              "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1,
                          "processor": platform.machine()}}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
