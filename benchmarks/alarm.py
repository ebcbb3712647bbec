"""Live alarms on the reference models: how early the seed's failure raises an error alarm, and how
many error alarms healthy runs raise.

Each run is an ordinary `diagnose.watch`-instrumented reference run (the path `diagnose gradflow`
takes) with online rule evaluation on (`evaluate_every`, the watch default spacing and time budget)
and an alarm callback that records (step, finding). Prints one JSON object:
- `perceiver`: the seed's perceiver config at the default scale: step of the first error alarm and
  which finding it was (target <= 20 optimizer steps), per seed;
- `direct`: the healthy direct config over `--seeds` seeds x `--steps` steps: error alarms per seed,
  with the run's final verdict beside it (a seed on which the direct model truly fails is reported
  as such: its alarms are not false alarms of the tool).

Usage: python benchmarks/alarm.py [--seeds 10] [--steps 150] [--scale small] [--workers 2] [--perceiver-seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one(config: str, seed: int, steps: int, scale: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from diagnose.engine.watcher import EVALUATE_EVERY
    from diagnose.lab.runs import instrumented_summary, resolve_config, run_instrumented

    alarms = []
    cfg = resolve_config(config, [], scale, seed)
    t0 = time.perf_counter()
    run = run_instrumented(cfg, steps, "cpu", alarm=alarms.append, evaluate_every=EVALUATE_EVERY)
    summary, _ = instrumented_summary([run])
    r = summary.runs[0]
    return {"config": config, "seed": seed, "verdict": r.verdict.label, "learned": r.verdict.learned,
            "loss_clip": round(r.final_loss.get("loss_clip", float("nan")), 4), "ln_B": round(r.chance_loss, 4),
            "alarms": [{"step": a.step, "delivered_at": a.delivered_at, "id": a.finding.id, "target": a.finding.target}
                       for a in alarms],
            "first_alarm_step": alarms[0].step if alarms else None,
            "first_alarm_delivered_at": alarms[0].delivered_at if alarms else None,
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--perceiver-seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--scale", default="small")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    threads = max(1, (os.cpu_count() or 1) // a.workers)
    jobs = [("perceiver", s) for s in range(a.perceiver_seeds)] + [("direct", s) for s in range(a.seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers, mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(one, *zip(*[(c, s, a.steps, a.scale, threads) for c, s in jobs])))
    perceiver = [r for r in rows if r["config"] == "perceiver"]
    direct = [r for r in rows if r["config"] == "direct"]
    healthy = [r for r in direct if r["learned"]]
    out = {
        "benchmark": "alarm", "scale": a.scale, "steps": a.steps,
        # step: the records went up to it; delivered_at: the observe that raised it (rules in the rule process)
        "perceiver": {"first_error_alarm_step": [r["first_alarm_step"] for r in perceiver],
                      "first_error_alarm_delivered_at": [r["first_alarm_delivered_at"] for r in perceiver],
                      "first_alarm": [r["alarms"][0] if r["alarms"] else None for r in perceiver],
                      "target_steps": 20, "runs": perceiver},
        "direct": {"seeds": a.seeds, "learned_seeds": [r["seed"] for r in healthy],
                   "failed_seeds": [r["seed"] for r in direct if not r["learned"]],
                   "error_alarms_on_runs_that_learned": sum(len(r["alarms"]) for r in healthy),
                   "error_alarms_on_runs_that_failed": sum(len(r["alarms"]) for r in direct if not r["learned"]),
                   "runs": direct},
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
