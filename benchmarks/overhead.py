"""Step-time overhead of the probes: instrumented / plain, same process, interleaved.

For each reference model (at `--scale`, default small) the same training step (forward, loss,
backward, optimizer step; a fixed batch so data generation is not timed) runs in blocks of
`--block` steps, cycling through the modes in every repetition:

  plain          no probes
  plain_control  no probes either (a second model): its ratio shows the measurement noise
  cheap          preset "cheap" (gradient flow + loss split), every step
  all            preset "all", every step, expensive probes every 10 steps (the default)
  all_exp1       preset "all" with every probe, expensive ones included, on every step
  watch_cheap    `diagnose.watch` with preset "cheap": probes plus the online rules (evaluated on
                 the records so far on watch's schedule), one watch kept open over all blocks
  watch_all      `diagnose.watch` with preset "all" (expensive probes every 10 steps) and online rules

A block's cost is its mean step time (so scheduled expensive steps are paid for); the ratio of a
mode is the median over repetitions of block mean / the plain block of the same repetition.
Prints one JSON object. Usage: python benchmarks/overhead.py [--device cuda] [--reps 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diagnose  # noqa: E402
from probes import attach  # noqa: E402
from reference_models import AlignmentLoss, apply_scale, build_data, build_model, load_config  # noqa: E402
from reference_models.train import make_optimizer  # noqa: E402

MODES = {
    "plain": None,
    "plain_control": None,  # a second uninstrumented copy: its ratio is the noise floor
    "cheap": dict(probes="cheap", every=1, expensive_every=10),
    "all": dict(probes="all", every=1, expensive_every=10),
    "all_exp1": dict(probes="all", every=1, expensive_every=1),
    "watch_cheap": dict(probes="cheap", every=1, expensive_every=10, watch=True),
    "watch_all": dict(probes="all", every=1, expensive_every=10, watch=True),
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_model(alias: str, scale: str, device: str, reps: int, block: int, warmup: int) -> dict:
    # over 60 lines: one benchmark: the set-up, the timed blocks of every variant (interleaved, so drift hits
    # them alike) and their summary share the same locals
    cfg = apply_scale(load_config(alias), scale)
    torch.manual_seed(0)
    train_src, _ = build_data(cfg, 0)
    B = cfg.dataset.batch_size
    tokens, text = train_src.batch(torch.arange(B))
    tokens, text = tokens.to(device), text.to(device)
    criterion = AlignmentLoss(cfg.losses)
    gen = torch.Generator().manual_seed(1)
    # one model + optimizer per mode, identical init, so every mode trains the same way
    setups = {}
    for mode in MODES:
        torch.manual_seed(0)
        model = build_model(cfg).to(device).train()
        setups[mode] = (model, make_optimizer(model, cfg))

    watches: dict[str, object] = {}
    steps_done = {m: 0 for m in MODES}

    def open_ctx(mode: str):
        model, opt = setups[mode]
        kwargs = dict(MODES[mode] or {})
        if not kwargs:
            return None
        if kwargs.pop("watch", False):
            if mode not in watches:  # one watch over every block: its evaluation schedule sees the whole run
                watches[mode] = diagnose.watch(model, opt, alarm="off", batch_size=B, **kwargs).__enter__()
            return watches[mode]
        return attach(model, optimizer=opt, **kwargs)

    def run_block(mode: str, first_step: int) -> float:
        model, opt = setups[mode]
        times = []
        ctx = open_ctx(mode)
        try:
            for i in range(block):
                step = steps_done[mode]
                steps_done[mode] += 1
                _sync(device)
                t0 = time.perf_counter()
                out = model(tokens, text)
                loss = criterion(out["image"], out["text"], out["logit_scale"], gen)
                opt.zero_grad(set_to_none=True)
                loss.total.backward()
                if ctx is not None:
                    ctx.observe(
                        step,
                        losses={**loss.components, "total": loss.total},
                        weights=loss.weights,
                        embeddings={"image": out["image"], "text": out["text"], "input": tokens.mean(1)},
                        logits={"image_to_text": loss.logits},
                        batch_size=B,
                        extras={"mrl_dim": loss.mrl_dims[0] if loss.mrl_dims else 0, "logit_scale": out["logit_scale"]},
                    )
                opt.step()
                model.clamp_logit_scale()
                _sync(device)
                times.append(time.perf_counter() - t0)
        finally:
            if ctx is not None and mode not in watches:
                ctx.close()
        return statistics.fmean(times)

    if warmup:  # allocators, kernels and probe code paths
        for mode in MODES:
            run_block(mode, 0)
    per_rep: dict[str, list[float]] = {m: [] for m in MODES}
    for rep in range(reps):
        order = list(MODES) if rep % 2 == 0 else list(reversed(MODES))
        for mode in order:
            per_rep[mode].append(run_block(mode, rep * block))
    for w in watches.values():
        w.close()
    per_rep_ratio = {m: [t / p for t, p in zip(per_rep[m], per_rep["plain"])] for m in MODES if m != "plain"}
    ratios = {m: statistics.median(r) for m, r in per_rep_ratio.items()}
    spread = {m: [round(q, 4) for q in statistics.quantiles(r, n=4)[::2]] for m, r in per_rep_ratio.items()}
    model = setups["plain"][0]
    return {
        "config": alias,
        "scale": scale,
        "batch_size": B,
        "tokens": cfg.vision_encoder.num_tokens,
        "params": sum(p.numel() for p in model.parameters()),
        "param_tensors": sum(1 for _ in model.parameters()),
        "plain_step_ms_median": round(1e3 * statistics.median(per_rep["plain"]), 3),
        "ratio": {m: round(r, 4) for m, r in ratios.items()},
        "ratio_iqr": spread,  # 25th and 75th percentile over repetitions
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--scale", default="small")
    ap.add_argument("--models", default="perceiver,direct")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        "device": (torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else f"cpu ({platform.processor() or platform.machine()})"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "reps": args.reps,
        "block_steps": args.block,
        "targets": {"all": 1.10, "cheap": 1.03, "watch_all": 1.10, "watch_cheap": 1.03},
        "models": [bench_model(m, args.scale, args.device, args.reps, args.block,
                               warmup=1) for m in args.models.split(",")],
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
