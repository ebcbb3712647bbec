"""Diagnostic accuracy on injected faults: run the suite, compare findings and root causes to ground truth.

Every case of `benchmarks/faults/suite.yaml` is one instrumented run of a reference config with
`--set`-style overrides (the same path as `diagnose gradflow`: `resolve_config` -> `run_instrumented`
-> `runs.instrumented_summary`), so the benchmark reads only the findings and root causes a normal run writes.
Runs execute in `--workers` spawned processes (one torch thread each when workers >= cores), or as Ray
tasks with `--executor ray [--ray-address ADDR] [--cpus-per-run C]` (pip install -e '.[ray]').

Prints one JSON object: per case the findings raised, the ranked root causes, the top one and whether
it matches; overall recall (expected finding ids raised / expected), top-1 root-cause accuracy, error
findings on healthy runs (false alarms), wall time and the machine.

Usage: python benchmarks/faults.py [--steps 60] [--scale small] [--workers 2] [--executor local|ray]
                                   [--only NAME ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml
from _emit import emit, finite, machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SUITE = Path(__file__).resolve().parent / "faults" / "suite.yaml"


def load_suite(path: Path = SUITE) -> list[dict]:
    data = yaml.safe_load(path.read_text())
    cases = [dict(c, kind="healthy", expect_findings=[], expect_cause=None) for c in data["healthy"]]
    cases += [dict(c, kind="fault") for c in data["faults"]]
    for c in cases:
        c.setdefault("seed", 0)
        c.setdefault("set", [])
    return cases


def run_case(case: dict, steps: int, scale: str) -> dict:
    """One instrumented run and its analysis; module-level so a worker process or a Ray task can run it."""
    from diagnose.lab.runs import instrumented_summary, resolve_config, run_instrumented

    start = time.perf_counter()
    cfg = resolve_config(case["config"], case["set"], scale, case["seed"])
    summary, _ = instrumented_summary([run_instrumented(cfg, steps, "cpu", name=case["name"])])
    d = summary.to_dict()
    return {"run": d["runs"][0], "findings": d["findings"], "seconds": round(time.perf_counter() - start, 1)}


def score(case: dict, out) -> dict:
    from diagnose.lab.executors import Failed

    if isinstance(out, Failed):  # the run raised or its worker died: a miss, with its error line
        row = {"name": case["name"], "kind": case["kind"], "config": case["config"], "seed": case["seed"],
               "set": case["set"],
               "verdict": "run failed", "error": out.error, "findings": [], "root_causes": [], "seconds": None}
        if case["kind"] == "healthy":
            return dict(row, error_findings=[], ok=False)
        return dict(row, expected_findings=case["expect_findings"], expected_found=[],
                    expected_cause=case["expect_cause"],
                    top_cause=None, cause_match=False)
    findings, run = out["findings"], out["run"]
    ids = sorted({f["id"] for f in findings})
    errors = sorted({f["id"] for f in findings if f["severity"] == "error"})
    causes = [c["cause"] for c in run["root_causes"]]
    row = {"name": case["name"], "kind": case["kind"], "config": case["config"], "seed": case["seed"],
           "set": case["set"],
           "verdict": run["verdict"]["label"], "loss_clip": finite(run["final_loss"].get("loss_clip", float("nan"))),
           "chance": round(run["chance_loss"], 4), "findings": [f"{f['id']}:{f['severity']}" for f in findings],
           "root_causes": causes, "seconds": out["seconds"]}
    if case["kind"] == "healthy":
        row["error_findings"] = errors
        row["ok"] = not errors
    else:
        found = [i for i in case["expect_findings"] if i in ids]
        row.update({"expected_findings": case["expect_findings"], "expected_found": found,
                    "expected_cause": case["expect_cause"], "top_cause": causes[0] if causes else None,
                    "cause_match": bool(causes) and causes[0] == case["expect_cause"]})
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--scale", default="small")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--executor", choices=("local", "ray"), default="local")
    ap.add_argument("--ray-address", default=None, help="Ray cluster to join (default: a local instance)")
    ap.add_argument("--cpus-per-run", type=int, default=1, help="CPUs each Ray task asks for")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--suite", type=Path, default=SUITE)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    cases = load_suite(args.suite)
    if args.only:
        cases = [c for c in cases if c["name"] in args.only]
    # longest first (perceiver runs) so the workers finish together
    order = sorted(cases, key=lambda c: (c["config"] != "perceiver", c["name"]))
    from diagnose.lab.executors import Job, make_executor

    start = time.perf_counter()
    with make_executor(args.executor, args.workers, args.ray_address, args.cpus_per_run) as ex:
        threads = ex.threads
        outs = ex.run([Job(c["name"], run_case, (c, args.steps, args.scale)) for c in order],
                      on_done=lambda name, _: print(f"done {name}", file=sys.stderr))
    wall = time.perf_counter() - start
    rows = {c["name"]: score(c, outs[c["name"]]) for c in order}
    rows = [rows[c["name"]] for c in cases]
    faults = [r for r in rows if r["kind"] == "fault"]
    healthy = [r for r in rows if r["kind"] == "healthy"]
    expected = sum(len(r["expected_findings"]) for r in faults)
    found = sum(len(r["expected_found"]) for r in faults)
    result = {
        "benchmark": "faults",
        "steps": args.steps, "scale": args.scale, "executor": args.executor, "workers": args.workers,
        "threads_per_worker": threads,
        "cases": rows,
        "summary": {
            "faults": len(faults), "healthy_runs": len(healthy),
            "recall": round(found / expected, 4) if expected else None,
            "expected_findings": expected, "expected_findings_raised": found,
            "top1_root_cause_accuracy": round(sum(r["cause_match"] for r in faults) / len(faults),
                                              4) if faults else None,
            "top1_misses": {r["name"]: {"expected": r["expected_cause"], "top": r["top_cause"]}
                            for r in faults if not r["cause_match"]},
            "false_alarms_healthy": sum(len(r["error_findings"]) for r in healthy),
            "false_alarm_runs": [r["name"] for r in healthy if not r["ok"]],
            "failed_runs": {r["name"]: r["error"] for r in rows if r.get("error")},
            "wall_seconds": round(wall, 1),
        },
        "machine": machine(),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    main()
