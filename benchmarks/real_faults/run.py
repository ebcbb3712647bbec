"""Real faults in code we did not write: does `diagnose.watch` name the cause people found in public threads?

Each `case_*.py` in `dev/` or `test/` is a short training script (peer-library models: flamingo-pytorch,
perceiver-pytorch, transformers CLIP from a tiny config, an MRL head) that reproduces a failure reported
in a public issue thread (cited in the file) and states its ground truth: the root cause id
(`diagnose.core.rules.causes`) a correct diagnosis names. `healthy.py` gives runs without a fault (different
models, seeds, batch sizes) to count false alarms.

Each script is run twice in this process, one torch thread: once with `no_watch` (the same loop with no
probes) and once under `diagnose.watch` (alarm policy "off": alarms are only recorded), and the ratio of
their wall times is the probe overhead. What is reported comes from the watched run only: the ranked root
causes of the whole run, the step of the first *error* alarm raised online, and the verdict.

Two halves: `dev/` (the cases the rules were built beside) and `test/` (cases written blind, without the
rules in view). `--half dev|test|both` (default dev) picks the folder(s); a case's `FAMILY`, when it has
one, is carried into its row and counted per family. Each half is imported under its own module names
(`benchmarks/real_faults/` stays on sys.path, so `from common import ...` works in both). `train(watch)` is
called as before: no other keyword (a test case's `fixed=False` stays at its default). `--fast` is the CI
subset of the dev half (`FAST` cases and `healthy.FAST`, one timing repetition instead of `REPS`).

Healthy runs of the Lightning family are fitted by a `lightning.Trainer`: there the watch reaches the run
through `factory.callback(**kw)`, a `diagnose.integrations.lightning.DiagnoseCallback` with the same
`out=None`, `alarm="off"`, name and budget (the callback passes `budget` on to `diagnose.watch`).

Prints one JSON object: per case its half, family, top-3 causes, first error alarm step, verdict, overhead
ratio; totals: top-1 and top-3 accuracy, detection rate (an error alarm raised during the run), median
optimizer steps to detection, per family, error findings (and alarms) on healthy runs, wall time,
machine. With `--half both`, `totals` holds the two halves side by side ({"dev": ..., "test": ...}, case
figures only) and the healthy figures once under "healthy"; with one half it is one flat object.

Usage: python benchmarks/real_faults/run.py [--half dev|test|both] [--fast] [--only NAME ...] [--no-healthy]
                                            [--out FILE]
(--only takes case stems, or half/stem to pick one half's case where both halves have that stem)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

REPS = 2  # timing repetitions per script (the findings come from the last watched run; runs are seeded)
FAST_REPS = 1  # --fast (CI): one plain and one watched run for the timing
# test: written blind, run once with the rules frozen at 48eeefe (results-frozen-48eeefe.json); cases whose
# output was then looked at while changing a rule moved to dev. test2: a second blind half, written after that.
# test3 (its writers' summaries read before its one run), test4, test5: blind, each run once at its freeze
# (results-frozen-*.json); all of them have been read since, so they are dev halves now. test6: blind, written
# while the rules of its session changed, run once at their freeze (1442fc4); read since: a dev half too. test7 to
# test17 the same way (each run once at its freeze, docs/benchmarks.md; test17 at afa6556, its misses then read
# to change three rules); test18 the same (once at ded8fe1, then read to change three rules); test19 (once at 2539202,
# then read to change two rules and fix a crash); test20 (once at b18f1f0: five crashes counted misses, then read to
# fix them and change four rules); test21 (once at fe22a8a, then read to change two rules); test22 (once at 4482c77,
# then read to change three rules and fix an ablation crash); test23 (once at 57019f5, then read to change four
# rules); test24 (once at 655e7ee, then read to change three rules and fix two crashes its ablation found);
# test25 (once at e8a5a59, then read to add one rule and two fixes its ablation needed); test26 (once at 060d655,
# then read to change a probe, a ranking and a fix); test27 (once at 5589d00, then read to change four rules and a
# fix); test28 (once at 2d42922, then read to change one rule); test29 (once at 0a2f4a0, then read to add a probe,
# a rule and a fix); test30 (once at 87cbfb7, then read to change a probe and two fixes); test31 (once at b9295a3,
# then read to add a rule and change a probe and a rule); test32 (once at 91d29b2, then read to add a rule);
# test33 (once at 16737ee, then read to add a rule, a reading and two branches);
# test34 (once at b069789, then read to narrow two rule findings and add a fix)
# test35 (blind: written by three helpers from benchmarks/real_faults/brief.py, run once at its freeze)
HALVES = ("dev", "test", "test2", "test3", "test4", "test5", "test6", "test7", "test8", "test9", "test10", "test11",
          "test12", "test13", "test14", "test15", "test16", "test17", "test18", "test19", "test20", "test21",
          "test22", "test23", "test24", "test25", "test26", "test27", "test28",
          "test29", "test30", "test31", "test32", "test33", "test34", "test35")
# a few dev cases, one per model family, that the CI test runs (tests/benchmarks/test_real_faults_fast.py)
FAST = ("case_text_tower_no_grad", "case_latents_ones", "case_mrl_sum_logged", "case_softmax_over_batch")


def case_files(half: str) -> list[Path]:
    """The half's `case_*.py` files (none when its folder does not exist yet)."""
    return sorted((HERE / half).glob("case_*.py"))


def case_names(half: str = "dev") -> list[str]:
    return [p.stem for p in case_files(half)]


def load_case(path: Path, half: str):
    """Import a case file under a module name unique to its half (dev/ and test/ may share a stem); its own
    folder is on sys.path while it imports, `benchmarks/real_faults/` always (`from common import ...`)."""
    name = f"real_faults_{half}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(path.parent))
    return mod


def _timed(train, factory, **kwargs) -> float:
    t0 = time.perf_counter()
    train(factory, **kwargs)
    return time.perf_counter() - t0


def measure(train, name: str, reps: int = REPS, **kwargs) -> dict:
    """Run `train(watch, **kwargs)` without and with `diagnose.watch`; what the watched run found.

    Timing and findings: `watch` as a user gets it (online rules within their default budget, 2% of the
    step time; on these ~15 ms toy steps that spaces evaluations ~150 steps apart). Detection: one more
    watched run with `budget=None`, the rules evaluated every 5 steps whatever it costs, which measures
    when the rules can tell, not when a budget lets them look; both alarm steps are reported."""
    import diagnose
    from common import no_watch

    held = {}

    def make_factory(budget=DEFAULT):
        extra = {} if budget is DEFAULT else {"budget": budget}

        def factory(model, optimizer, **kw):
            w = diagnose.watch(model, optimizer, out=None, name=name, alarm="off", **extra, **kw)
            held["w"] = lambda: w
            return w

        def callback(**kw):  # the Lightning path: the watch is made by the callback at on_train_start
            from diagnose.integrations.lightning import DiagnoseCallback

            cb = DiagnoseCallback(out=None, name=name, alarm="off", **extra, **kw)
            held["w"] = lambda: cb.last_watch
            return cb

        factory.callback = callback
        return factory

    factory = make_factory()

    # plain and watched alternate, the faster of two each: the first run of a process pays one-off costs
    plain, watched = float("inf"), float("inf")
    for _ in range(reps):
        plain = min(plain, _timed(train, no_watch, **kwargs))
        watched = min(watched, _timed(train, factory, **kwargs))
    w = held["w"]()
    run = w.result().to_dict()["runs"][0]
    findings = w.result().to_dict()["findings"]
    budgeted, budgeted_all = _first_error(w), _error_alarms(w)
    train(make_factory(budget=None), **kwargs)
    every5, every5_all = _first_error(held["w"]()), _error_alarms(held["w"]())
    return {
        "top3": [c["cause"] for c in run["root_causes"][:3]],
        "first_error_alarm_step": every5[0], "first_error_alarm": every5[1],
        "first_error_alarm_step_default_budget": budgeted[0], "first_error_alarm_default_budget": budgeted[1],
        "error_alarms": every5_all, "error_alarms_default_budget": budgeted_all,
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


def _error_alarms(w) -> list[dict]:
    """Each error alarm id once, at the step it first fired."""
    first: dict = {}
    for a in w.alarms:
        if a.finding.severity == "error" and a.finding.id not in first:
            first[a.finding.id] = a.step
    return [{"id": k, "step": v} for k, v in first.items()]


def crashed(exc: Exception) -> dict:
    """The row of a case whose script raised (under the watch or its own stand-in): no cause, no alarm, a miss."""
    import traceback

    where = traceback.extract_tb(exc.__traceback__)[-1]
    return {"top3": [], "first_error_alarm_step": None, "first_error_alarm": None,
            "first_error_alarm_step_default_budget": None, "first_error_alarm_default_budget": None,
            "error_alarms": [], "error_alarms_default_budget": [], "verdict": None, "error_findings": [],
            "warning_findings": [], "steps": None, "seconds_plain": None, "seconds_watched": None,
            "overhead_ratio": None,
            "crashed": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                       f"({Path(where.filename).name}:{where.lineno})"}


def run_case(path: Path, half: str, reps: int = REPS) -> dict:
    name = path.stem
    mod = load_case(path, half)
    try:
        out = measure(mod.train, name, reps)
    except Exception as exc:  # noqa: BLE001 - the script broke under the watch: that case's miss, not the run's end
        out = crashed(exc)
    finally:  # a case that leaves its (one-process) group behind must not break the next case's init
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    truth = mod.CAUSE
    out = {"case": name, "half": half, "family": getattr(mod, "FAMILY", None), "threads": list(mod.THREADS),
           "ground_truth": truth, **out}
    out["top1_correct"] = bool(out["top3"]) and out["top3"][0] == truth
    out["top3_correct"] = truth in out["top3"]
    out["detected"] = out["first_error_alarm_step"] is not None
    out["detected_default_budget"] = out["first_error_alarm_step_default_budget"] is not None
    return out


def run_healthy(spec: dict, reps: int = REPS) -> dict:
    import healthy

    out = measure(healthy.train, f"healthy-{spec['model']}-s{spec['seed']}-b{spec['batch']}", reps, **spec)
    keys = ("top3", "first_error_alarm_step", "first_error_alarm", "first_error_alarm_step_default_budget",
            "first_error_alarm_default_budget", "error_alarms", "error_alarms_default_budget", "verdict",
            "error_findings", "warning_findings", "steps", "overhead_ratio")
    return {"run": spec, **{k: out[k] for k in keys}}


def case_totals(cases: list[dict]) -> dict:
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
        "overhead_ratio_median": statistics.median(ratios) if ratios else None,
        "overhead_ratio_max": max(ratios) if ratios else None,
        "by_family": by_family(cases),
    }


def by_family(cases: list[dict]) -> dict:
    """Per FAMILY (cases without one under null): cases, top-1 correct, detected (counts)."""
    fams: dict = {}
    for c in cases:
        f = fams.setdefault(str(c.get("family")), {"cases": 0, "top1": 0, "detected": 0})
        f["cases"] += 1
        f["top1"] += c["top1_correct"]
        f["detected"] += c["detected"]
    return dict(sorted(fams.items()))


def healthy_totals(healthy_runs: list[dict]) -> dict:
    return {
        "healthy_runs": len(healthy_runs),
        "healthy_learned": sum(bool(h["verdict"] and h["verdict"].startswith("learned")) for h in healthy_runs),
        "healthy_error_findings": sum(len(h["error_findings"]) for h in healthy_runs),
        "healthy_runs_with_error_alarm": sum(h["first_error_alarm_step"] is not None
                                             or h["first_error_alarm_step_default_budget"] is not None for h in healthy_runs),
        "healthy_families": sorted({h["run"]["model"] for h in healthy_runs}),
    }


def totals(cases: list[dict], healthy_runs: list[dict]) -> dict:
    """One half: case and healthy figures in one object (the shape before the split)."""
    return {**case_totals(cases), **healthy_totals(healthy_runs)}


def select(halves: tuple[str, ...], only: list[str] | None) -> list[tuple[str, Path]]:
    """(half, path) of the cases to run; SystemExit(2) with one line for a name no selected half has."""
    found = [(h, p) for h in halves for p in case_files(h)]
    if not only:
        return found
    picked, unknown = [], []
    for name in only:
        half, _, stem = name.rpartition("/")
        hits = [(h, p) for h, p in found if p.stem == stem and half in ("", h)]
        picked += [hp for hp in hits if hp not in picked]
        if not hits:
            unknown.append(name)
    if unknown:
        known = ", ".join(f"{h}/{p.stem}" if len(halves) > 1 else p.stem for h, p in found) or "none"
        print(f"--only: unknown case(s) {', '.join(unknown)} in {'+'.join(halves)}; expected one of {known}",
              file=sys.stderr)
        raise SystemExit(2)
    return picked


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--half", choices=(*HALVES, "both", "all"), default="dev",
                    help="which half's cases (default dev; both: dev and test; all: every half)")
    ap.add_argument("--fast", action="store_true", help=f"dev only: {', '.join(FAST)} and healthy.FAST (CI)")
    ap.add_argument("--only", nargs="*", help="case names (case_*.py stems, or half/stem)")
    ap.add_argument("--no-healthy", action="store_true")
    ap.add_argument("--healthy-only", action="store_true", help="only the healthy runs (no fault case)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.fast and args.half != "dev":
        print(f"--fast is the dev half's CI subset; not with --half {args.half}", file=sys.stderr)
        raise SystemExit(2)
    halves = {"both": ("dev", "test"), "all": HALVES}.get(args.half, (args.half,))
    selected = select(halves, args.only or (list(FAST) if args.fast else None))
    import torch

    torch.set_num_threads(1)
    import healthy

    t0 = time.perf_counter()
    reps = FAST_REPS if args.fast else REPS
    cases = [] if args.healthy_only else [run_case(path, half, reps) for half, path in selected]
    specs = [] if args.no_healthy else (healthy.FAST if args.fast else healthy.SPECS)
    healthy_runs = [run_healthy(s, reps) for s in specs]
    if len(halves) > 1:
        summary = {**{h: case_totals([c for c in cases if c["half"] == h]) for h in halves},
                   "healthy": healthy_totals(healthy_runs)}
    else:
        summary = totals(cases, healthy_runs)
    result = {"half": args.half, "totals": summary, "cases": cases, "healthy": healthy_runs,
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
