"""Seconds per training step and peak memory for both reference models at small and full scale.

Each measurement runs in a fresh subprocess so the peak RSS (ru_maxrss) belongs to that case only.
Prints one JSON document. Full scale runs at batch 8 (a batch that fits a CPU laptop).

    python benchmarks/step_cost.py [--steps 5] [--full-batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def measure(config: str, scale: str, batch: int, steps: int) -> dict:
    import torch

    from reference_models import AlignmentLoss, apply_scale, build_data, build_model, load_config
    from reference_models.train import make_optimizer

    cfg = apply_scale(load_config(config,
                                  [f"dataset.batch_size={batch}", f"dataset.num_train={batch * 4}",
                                   "dataset.num_val=8"]), scale)
    torch.manual_seed(0)
    train, _ = build_data(cfg, 0)
    model = build_model(cfg)
    opt = make_optimizer(model, cfg)
    crit = AlignmentLoss(cfg.losses)
    tokens, text = train.batch(torch.arange(batch))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(steps + 1):  # the first step warms up allocators and is not timed
        t0 = time.perf_counter()
        out = model(tokens, text)
        loss = crit(out["image"], out["text"], out["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "config": config, "scale": scale, "batch_size": batch,
        "params": sum(p.numel() for p in model.parameters()),
        "seconds_per_step_median": statistics.median(times),
        "seconds_per_step_min": min(times),
        "peak_rss_mib": round(peak_kb / 1024, 1),
        "step_rss_growth_mib": round((peak_kb - rss_before) / 1024, 1),
        "timed_steps": steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--full-batch", type=int, default=8)
    ap.add_argument("--one", nargs=3, metavar=("CONFIG", "SCALE", "BATCH"))
    args = ap.parse_args()
    if args.one:
        config, scale, batch = args.one
        print(json.dumps(measure(config, scale, int(batch), args.steps)))
        return
    cases = []
    for config in ("direct", "perceiver"):
        from reference_models import load_config

        cases.append((config, "small", load_config(config).dataset.batch_size))
        cases.append((config, "full", args.full_batch))
    results = []
    for config, scale, batch in cases:
        proc = subprocess.run([sys.executable, __file__, "--one", config, scale, str(batch), "--steps",
                               str(args.steps)],
                              capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    import torch

    print(json.dumps({
        "benchmark": "step_cost",
        "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
