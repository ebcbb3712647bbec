"""Seed robustness of the reference verdicts: does the direct config learn, and the perceiver seed config
fail, on every seed at a given scale?

Every (config, seed) is one plain training run through the project's own path (`diagnose.lab.runs.resolve_config`
-> `run_training` -> `TrainedRun.summary()`, the same verdict `diagnose train` writes; no probes), at
`diagnose compare`'s default step count. Runs execute on `diagnose.lab.executors` (`--workers` spawned
processes, one torch thread each on 2 cores); a run that raises is reported with its error line.

Prints one JSON object: per run the config, seed, final CLIP loss (end-of-run window mean), chance ln(B),
held-out R@1 and its chance, the verdict label and whether it counts as learned; per config the count of
seeds learned; wall time and the machine.

Usage: python benchmarks/seeds.py [--seeds 20] [--configs direct perceiver] [--steps 150] [--scale small]
                                  [--set key=value ...] [--workers 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _emit import emit, finite, machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _steps_default() -> int:
    from diagnose.cli.commands.instrumented import DEFAULT_STEPS  # `diagnose compare`'s default

    return DEFAULT_STEPS


def run_seed(config: str, seed: int, steps: int, scale: str, sets: list[str], settle: bool = False) -> dict:
    """One plain training run and its verdict; module-level so a worker process can run it. With
    `settle`: an instrumented run that stops once its verdict is settled, as a `--seeds` replica does."""
    from diagnose.lab.runs import resolve_config, run_instrumented, run_training

    start = time.perf_counter()
    cfg = resolve_config(config, sets, scale, seed)
    if settle:
        run, _ = run_instrumented(cfg, steps, "cpu", name=f"{config}-seed{seed}", settle=True, data_signal=False)
    else:
        run = run_training(cfg, steps, None, "cpu", [], name=f"{config}-seed{seed}")
    summary = run.summary(kind="train")
    r = summary.retrieval
    return {"config": config, "seed": seed,
            "loss_clip": finite(summary.final_loss.get("loss_clip")), "chance": finite(summary.chance_loss),
            "r@1": finite(r.get("r@1")), "chance@1": finite(r.get("chance@1"), 6),
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
                    help="stop each run once its verdict is settled, as --seeds replicas do "
                         "(to compare with full runs)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    steps = args.steps or _steps_default()

    from diagnose.lab.executors import Failed, Job, make_executor

    def note(name: str, row) -> None:
        text = (f"FAILED: {row.error}" if isinstance(row, Failed)
                else f"{row['verdict']} (loss_clip {row['loss_clip']}, R@1 {row['r@1']})")
        print(f"{name}: {text}", file=sys.stderr, flush=True)

    jobs = [Job(f"{c} seed {s}", run_seed, (c, s, steps, args.scale, args.sets, args.settle))
            for c in args.configs for s in range(args.seeds)]
    start = time.perf_counter()
    with make_executor("local", args.workers) as ex:
        threads = ex.threads
        results = ex.run(jobs, on_done=note)
    rows = [{"config": j.args[0], "seed": j.args[1], "error": results[j.name].error, "learned": False}
            if isinstance(results[j.name], Failed) else results[j.name] for j in jobs]
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
        "machine": machine(),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    main()
