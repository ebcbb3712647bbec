"""Seed robustness of the reference verdicts: does the direct config learn, and the perceiver seed config
fail, on every seed at a given scale?

Every (config, seed) is one plain training run through the project's own path (`diagnose.runs.resolve_config`
-> `run_training` -> `TrainedRun.summary()`, the same verdict `diagnose train` writes; no probes), at
`diagnose compare`'s default step count. Runs execute in `--workers` spawned processes (one torch thread each).

Prints one JSON object: per run the config, seed, final CLIP loss (end-of-run window mean), chance ln(B),
held-out R@1 and its chance, the verdict label and whether it counts as learned; per config the count of
seeds learned; wall time and the machine.

Usage: python benchmarks/seeds.py [--seeds 20] [--configs direct perceiver] [--steps 150] [--scale small]
                                  [--set key=value ...] [--workers 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _steps_default() -> int:
    from diagnose.commands.instrumented import DEFAULT_STEPS  # `diagnose compare`'s default

    return DEFAULT_STEPS


def _finite(x: float | None, nd: int = 4) -> float | None:
    """JSON has no NaN: a diverged run's value is reported as null."""
    return round(float(x), nd) if x is not None and math.isfinite(float(x)) else None


def run_seed(config: str, seed: int, steps: int, scale: str, sets: list[str], threads: int | None,
             settle: bool = False) -> dict:
    """One plain training run and its verdict; module-level so a worker process can run it. With
    `settle`: an instrumented run that stops once its verdict is settled, as a `--seeds` replica does."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from diagnose.runs import resolve_config, run_instrumented, run_training

    start = time.perf_counter()
    cfg = resolve_config(config, sets, scale, seed)
    if settle:
        run, _ = run_instrumented(cfg, steps, "cpu", name=f"{config}-seed{seed}", settle=True, data_signal=False)
    else:
        run = run_training(cfg, steps, None, "cpu", [], name=f"{config}-seed{seed}")
    summary = run.summary(kind="train")
    r = summary.retrieval
    return {"config": config, "seed": seed,
            "loss_clip": _finite(summary.final_loss.get("loss_clip")), "chance": _finite(summary.chance_loss),
            "r@1": _finite(r.get("r@1")), "chance@1": _finite(r.get("chance@1"), 6),
            "verdict": summary.verdict.label, "learned": bool(summary.verdict.learned),
            "steps": summary.steps, "settled": (summary.extra.get("settled") or {}).get("why"),
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1")
    ap.add_argument("--configs", nargs="+", default=["direct", "perceiver"])
    ap.add_argument("--steps", type=int, default=None, help="default: diagnose compare's DEFAULT_STEPS")
    ap.add_argument("--scale", default="small")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override passed to every run (repeatable)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--settle", action="store_true",
                    help="stop each run once its verdict is settled, as --seeds replicas do (to compare with full runs)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    steps = args.steps or _steps_default()

    jobs = [(c, s) for c in args.configs for s in range(args.seeds)]
    threads = max(1, (os.cpu_count() or 1) // max(1, args.workers))
    start = time.perf_counter()
    if args.workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_seed, c, s, steps, args.scale, args.sets, threads, args.settle) for c, s in jobs]
            rows = [f.result() for f in futures]
    else:
        rows = []
        for c, s in jobs:
            rows.append(run_seed(c, s, steps, args.scale, args.sets, None, args.settle))
            print(f"{c} seed {s}: {rows[-1]['verdict']} (loss_clip {rows[-1]['loss_clip']}, "
                  f"R@1 {rows[-1]['r@1']})", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    totals = {}
    for c in args.configs:
        mine = [r for r in rows if r["config"] == c]
        totals[c] = {"seeds": len(mine), "learned": sum(r["learned"] for r in mine),
                     "not_learned_seeds": [r["seed"] for r in mine if not r["learned"]]}
    result = {
        "benchmark": "seeds", "steps": steps, "scale": args.scale, "set": args.sets,
        "workers": args.workers, "threads_per_worker": threads, "runs": rows, "totals": totals,
        "wall_seconds": round(wall, 1),
        "machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                    "torch": __import__("torch").__version__},
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
