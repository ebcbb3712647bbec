"""Per-step cost of `diagnose.watch` (probes "cheap" and "all") and of `wandb.watch(log="all", log_freq=1)`.

In one process, on identical copies of a model (same init, same fixed batch, own optimizer each), blocks
of `--block` training steps run in turn for every mode, in alternating order each repetition:

  plain          no instrumentation
  plain_control  a second uninstrumented copy: its figures are the noise floor
  watch_cheap    `diagnose.watch(probes="cheap")`, one watch kept open over all blocks (online rules on)
  watch_all      `diagnose.watch(probes="all")`, default schedule (expensive probes under the probe budget)
  wandb          `wandb.watch(model, log="all", log_freq=1)` in offline mode plus one `wandb.log` per step

A block's cost is its process CPU time per step (`time.process_time`: all threads of this process; the
rule process of `watch` and wandb's service process are children and are not counted) and its wall time
per step. A watch's own CPU time per step (`own_ms_cpu`: thread time inside `observe` and the optimizer hook
that measures the update) is reported beside it: it leaves out what the watch costs the rest of the step
(caches it evicts; the forward hooks of "all") without the plain block's noise: small changes show there first.
Added ms of a mode: the median over repetitions of (mode block - plain block of the same
repetition), and the mean over all its steps (`added_ms_mean`: it pays for every expensive step whatever
the block length); ratio: median of mode / plain. Each watch first runs `--watch-warmup` steps (default 250)
untimed: the gradient probe measures everything on every step of a run's first 50 and reaches its steady
spacing at step 250 (`probes.schedule.FullSchedule`), so the figures are a long run's per-step cost.

Models: (a) "mlp_clip": MLP projector + tiny CLIP-like two-tower, ~3.1M parameters; (b) "perceiver_d64":
`flamingo_pytorch.PerceiverResampler` at d64 under a small text tower; (c) "slow_clip": the two-tower at
full width with a batch that makes a step >= 300 ms here; on request (`--models deep_mlp`), 801 small
parameter tensors (the per-tensor cost). A separate file, not a mode of step_cost.py:
that one measures each reference model in a fresh subprocess for its peak RSS, this one needs every mode
in the same process, interleaved.

    python benchmarks/watch_cost.py [--models mlp_clip,perceiver_d64,slow_clip] [--reps 7] [--block 10]

`--breakdown` instead prints where a watch's per-step time goes: process CPU time inside each probe's
`observe` / `after_step` and the records' flush (expensive probes off, so these are the per-step costs), on
the gradient probe's full steps and on its light ones apart, and the tensor passes over all parameters the
gradient probe makes, each timed alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diagnose  # noqa: E402
from benchmarks._emit import emit, machine  # noqa: E402

DEVICE = torch.device("cpu")  # --device
AMP = False  # --amp bf16: forward under torch.autocast(bfloat16)
MODES = ("plain", "plain_control", "watch_cheap", "watch_all", "wandb")
TARGETS = {"watch_cheap_added_ms": 0.5, "watch_all_added_ms_mean": 3.0, "slow_ratio": 1.05}


class Tower(nn.Module):
    """Transformer encoder over tokens, mean-pooled."""

    def __init__(self, d: int, layers: int, ff: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(d, 4, ff, dropout=0.0, batch_first=True)
                                    for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x.mean(1)


class TwoTower(nn.Module):
    """Image features -> vision tower -> MLP projector; token ids -> text tower; CLIP logit scale."""

    def __init__(self, d: int = 256, ff: int = 1024, vision_layers: int = 1, text_layers: int = 2,
                 vocab: int = 1024, seq: int = 8) -> None:
        super().__init__()
        self.vision = Tower(d, vision_layers, ff)
        self.projector = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(seq, d))
        self.text = Tower(d, text_layers, ff)
        self.text_proj = nn.Linear(d, d)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.projector(self.vision(image))
        txt = self.text_proj(self.text(self.embed(text) + self.pos))
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


class Resampled(nn.Module):
    """PerceiverResampler (flamingo-pytorch) over image tokens, pooled latents; bag-of-words text tower."""

    def __init__(self, d: int = 64, vocab: int = 512) -> None:
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=d, depth=2, dim_head=32, heads=4, num_latents=16)
        self.image_proj = nn.Linear(d, d)
        self.embed = nn.Embedding(vocab, d)
        self.text_proj = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.logit_scale = nn.Parameter(torch.tensor(2.659))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.image_proj(self.resampler(image).mean(dim=(1, 2)))
        txt = self.text_proj(self.embed(text).mean(1))
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


class Deep(nn.Module):
    """Two towers of `depth` 16x16 linear layers each: many small parameter tensors (per-tensor costs)."""

    def __init__(self, depth: int = 200, d: int = 16, vocab: int = 256) -> None:
        super().__init__()
        self.vision = nn.Sequential(*[nn.Linear(d, d) for _ in range(depth)])
        self.embed = nn.Embedding(vocab, d)
        self.text = nn.Sequential(*[nn.Linear(d, d) for _ in range(depth)])
        self.logit_scale = nn.Parameter(torch.tensor(2.659))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.vision(image.mean(1)), dim=-1), F.normalize(self.text(self.embed(text).mean(1)), dim=-1)


def build(name: str) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """A model and its fixed batch (image features, token ids)."""
    g = torch.Generator().manual_seed(0)
    if name == "mlp_clip":
        model, batch, tokens, d, seq, vocab = TwoTower(seq=4), 16, 2, 256, 4, 1024
    elif name == "perceiver_d64":
        model, batch, tokens, d, seq, vocab = Resampled(), 32, 32, 64, 8, 512
    elif name == "slow_clip":
        model, batch, tokens, d, seq, vocab = TwoTower(d=384, ff=1536, vision_layers=2, seq=16), 32, 16, 384, 16, 1024
    elif name == "deep_mlp":
        model, batch, tokens, d, seq, vocab = Deep(), 16, 4, 16, 4, 256
    elif name == "big_clip":  # full width: ~190 M parameters (12 layers of d1024, a 32k vocabulary), batch 128
        model = TwoTower(d=1024, ff=4096, vision_layers=6, text_layers=6, vocab=32000, seq=32)
        batch, tokens, d, seq, vocab = 128, 64, 1024, 32, 32000
    else:
        raise SystemExit(f"--models: unknown model {name!r}; expected mlp_clip, perceiver_d64, slow_clip, deep_mlp "
                         "or big_clip")
    inputs = (torch.randn(batch, tokens, d, generator=g), torch.randint(0, vocab, (batch, seq), generator=g))
    return model.to(DEVICE), tuple(t.to(DEVICE) for t in inputs)


def clip_loss(model: nn.Module, image: torch.Tensor, text: torch.Tensor):
    with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=AMP):
        img, txt = model(image, text)
        logits = model.logit_scale.exp() * img @ txt.T
    labels = torch.arange(len(img), device=img.device)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    return loss, img, txt, logits


def bench_model(name: str, reps: int, block: int, wandb_mod, watch_warmup: int = 0) -> dict:
    # over 60 lines: one benchmark: the copies, the timed blocks of every mode (interleaved, so drift and load
    # hit them alike) and their summary share the same locals
    copies = {}
    for mode in MODES:
        torch.manual_seed(0)
        model, batch = build(name)
        copies[mode] = (model.train(), torch.optim.AdamW(model.parameters(), lr=1e-4), batch)
    watches, steps = {}, {m: 0 for m in MODES}
    for mode, probes in (("watch_cheap", "cheap"), ("watch_all", "all")):
        model, opt, (image, _) = copies[mode]
        watches[mode] = diagnose.watch(model, opt, alarm="off", probes=probes, batch_size=len(image))
    if wandb_mod is not None:
        wandb_mod.watch(copies["wandb"][0], log="all", log_freq=1)

    own = {m: 0.0 for m in watches}  # thread CPU time inside the watch's own calls (observe, its optimizer hook)
    for mode, w in watches.items():
        after = w.session._run_after_step

        def timed_after(after=after, mode=mode) -> None:
            t = time.thread_time()
            after()
            own[mode] += time.thread_time() - t
        w.session._run_after_step = timed_after

    def run_block(mode: str) -> tuple[float, float]:
        model, opt, (image, text) = copies[mode]
        w = watches.get(mode)
        sync()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(block):
            loss, img, txt, logits = clip_loss(model, image, text)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if w is not None:
                t = time.thread_time()
                w.observe(steps[mode], losses={"total": loss}, embeddings={"image": img, "text": txt},
                          logits=logits, batch_size=len(image))
                own[mode] += time.thread_time() - t
            elif mode == "wandb" and wandb_mod is not None:
                wandb_mod.log({"loss": loss.item()})
            opt.step()
            steps[mode] += 1
        sync()
        return (time.process_time() - c0) / block, (time.perf_counter() - t0) / block

    for mode in MODES:  # warm-up: allocators, kernels, probe code paths, the rule process
        run_block(mode)
    for mode in watches:  # past the gradient probe's dense start (probes.schedule.FullSchedule): steady state
        for _ in range(-(-max(0, watch_warmup - block) // block)):
            run_block(mode)
    cpu = {m: [] for m in MODES}
    wall = {m: [] for m in MODES}
    own_blocks: dict[str, list[float]] = {m: [] for m in watches}
    for rep in range(reps):
        for mode in (MODES if rep % 2 == 0 else MODES[::-1]):
            before = own.get(mode, 0.0)
            c, t = run_block(mode)
            cpu[mode].append(c)
            wall[mode].append(t)
            if mode in own_blocks:
                own_blocks[mode].append((own[mode] - before) / block)
    coverage = {}
    for mode, w in watches.items():
        cov = w.coverage()
        coverage[mode] = {k: v for k, v in cov.items() if k.startswith(("steps_", "expensive", "gradient_flow"))}
        w.close()
    model = copies["plain"][0]
    out = {"model": name, "params": sum(p.numel() for p in model.parameters()),
           "param_tensors": sum(1 for _ in model.parameters()),
           "plain_step_ms_cpu": round(1e3 * statistics.median(cpu["plain"]), 3),
           "plain_step_ms_wall": round(1e3 * statistics.median(wall["plain"]), 3), "modes": {}}
    for mode in MODES[1:]:
        if mode == "wandb" and wandb_mod is None:
            continue
        d_cpu = [1e3 * (a - b) for a, b in zip(cpu[mode], cpu["plain"])]
        d_wall = [1e3 * (a - b) for a, b in zip(wall[mode], wall["plain"])]
        out["modes"][mode] = {
            "added_ms_cpu": round(statistics.median(d_cpu), 3),
            "added_ms_cpu_mean": round(statistics.fmean(d_cpu), 3),
            "ratio_cpu": round(statistics.median(a / b for a, b in zip(cpu[mode], cpu["plain"])), 4),
            "added_ms_wall": round(statistics.median(d_wall), 3),
            "ratio_wall": round(statistics.median(a / b for a, b in zip(wall[mode], wall["plain"])), 4),
        }
        if mode in own_blocks:  # the watch's own code alone: no plain block subtracted, so far less noise
            out["modes"][mode]["own_ms_cpu"] = round(1e3 * statistics.median(own_blocks[mode]), 3)
            out["modes"][mode]["own_ms_cpu_mean"] = round(1e3 * statistics.fmean(own_blocks[mode]), 3)
    out["watch_coverage"] = coverage
    return out


def breakdown(name: str, steps: int) -> dict:
    """Per-step CPU ms of each part of `watch` (cheap steps), split by the gradient probe's step kind (full:
    every metric and the update; light: the grad norms alone, `probes.schedule.FullSchedule`), and of each
    full-parameter tensor pass."""
    from collections import Counter

    out: dict = {"model": name}
    for preset in ("cheap", "all"):
        torch.manual_seed(0)
        model, (image, text) = build(name)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        w = diagnose.watch(model, opt, alarm="off", probes=preset, batch_size=len(image), expensive_every=10 ** 9)
        acc: Counter = Counter()

        def timed(obj, attr, label):
            f = getattr(obj, attr)

            def g(*a, **k):
                t = time.process_time()
                try:
                    return f(*a, **k)
                finally:
                    acc[label] += time.process_time() - t
            setattr(obj, attr, g)

        for pname, probe in w.session.probes.items():
            timed(probe, "observe", pname)
            timed(probe, "after_step", f"{pname}.after_step")
        timed(w.session.buffer, "flush", "records flush (rows of every probe)")
        timed(w, "observe", "watch.observe (all of the above but after_step)")
        kinds = {"full": Counter(), "light": Counter()}
        counts = Counter()
        warmup = 260  # the gradient probe's spacing is steady from step 250 (probes.schedule.FullSchedule)
        for step in range(steps + warmup):
            acc.clear()
            c0 = time.process_time()
            loss, img, txt, logits = clip_loss(model, image, text)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            w.observe(step, losses={"total": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=len(image))
            opt.step()
            if step >= warmup:
                kind = "full" if w.session.full else "light"
                acc["step_ms_cpu"] = time.process_time() - c0
                kinds[kind].update(acc)
                counts[kind] += 1
        w.close()
        out[preset] = {kind: {"steps": counts[kind], **{k: round(1e3 * v / counts[kind], 3)
                                                        for k, v in kinds[kind].most_common()
                                                        if v / counts[kind] > 1e-5}}
                       for kind in kinds if counts[kind]}
    params = [p for p in model.parameters()]
    grads = [p.grad for p in params]
    snap = [p.detach().clone() for p in params]
    passes = {"grad norms (_foreach_norm)": lambda: torch._foreach_norm(grads),
              "param norms (_foreach_norm)": lambda: torch._foreach_norm(params),
              "non-zero counts (count_nonzero per tensor)": lambda: [torch.count_nonzero(g) for g in grads],
              "update snapshot (_foreach_copy_)": lambda: torch._foreach_copy_(snap, params),
              "update delta (_foreach_sub_)": lambda: torch._foreach_sub_(snap, params),
              "update norms (_foreach_norm)": lambda: torch._foreach_norm(snap)}
    out["tensor_passes_ms"] = {}
    for label, fn in passes.items():
        times = []
        for _ in range(21):
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
        out["tensor_passes_ms"][label] = round(1e3 * statistics.median(times), 3)
    return out


def sync() -> None:
    """Wait for the device (CUDA): a block's wall time then holds all of its kernels."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def host_syncs(name: str, steps: int, warmup: int = 260) -> dict:
    """Synchronising CUDA calls per step, counted by `torch.cuda.set_sync_debug_mode("warn")` (one warning per
    host read, stream or device synchronisation): inside a watch's own calls (observe, its optimizer hook) after
    `warmup` steps, for each preset, by the kind of step (the gradient probe's full or light step, expensive probes
    due or not); and, as the counter's control, in a plain step that reads `loss.item()` (must read 1)."""
    import warnings
    from collections import Counter

    root = str(Path(__file__).resolve().parents[1]) + os.sep
    where: dict[str, Counter] = {}  # preset -> Counter of the source lines that synchronised

    def counted(fn, tally: Counter, key: str):
        def wrapper(*a, **k):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    return fn(*a, **k)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
                    syncs = [x for x in caught if "synchroniz" in str(x.message)]
                    tally[key] += len(syncs)
                    tally.update(f"at {x.filename.replace(root, '')}:{x.lineno}" for x in syncs)
        return wrapper

    out: dict = {"model": name, "steps": steps, "after_warmup_steps": warmup}
    for preset in ("cheap", "all"):
        torch.manual_seed(0)
        model, (image, text) = build(name)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        w = diagnose.watch(model, opt, alarm="off", probes=preset, batch_size=len(image))
        tally: Counter = Counter()
        w.session._run_after_step = counted(w.session._run_after_step, tally, "syncs")
        observe = counted(w.observe, tally, "syncs")
        kinds: dict[str, list[int]] = {}
        for step in range(warmup + steps):
            loss, img, txt, logits = clip_loss(model, image, text)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            tally.clear()
            expensive_before = w.session.steps["expensive"]
            observe(step, losses={"total": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                    batch_size=len(image))
            opt.step()
            if step >= warmup:
                s = w.session
                kind = ("expensive" if s.steps["expensive"] > expensive_before else "full" if s.full else "light")
                kinds.setdefault(kind, []).append(tally["syncs"])
                where.setdefault(preset, Counter()).update({f"{kind} {k}": v for k, v in tally.items()
                                                            if k.startswith("at ")})
        w.close()
        out[preset] = {kind: {"steps": len(v), "syncs_per_step_max": max(v), "syncs_per_step_mean": round(
            statistics.fmean(v), 3)} for kind, v in kinds.items()}
        out[preset]["syncs_per_step_mean"] = round(statistics.fmean([x for v in kinds.values() for x in v]), 3)
        out[preset]["where"] = dict(where.get(preset, Counter()).most_common(16))
    torch.manual_seed(0)
    model, (image, text) = build(name)
    control: Counter = Counter()
    read = counted(lambda t: t.item(), control, "syncs")
    loss = clip_loss(model, image, text)[0]
    read(loss)
    out["control_loss_item_syncs"] = control["syncs"]
    return out


def _wandb():
    """wandb in offline mode, writing under a temporary directory; None (row absent) when not installed."""
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        import wandb
    except ImportError:
        return None
    wandb.init(project="watch_cost", dir=tempfile.mkdtemp(prefix="watch_cost_wandb_"), mode="offline")
    return wandb


def gpu_machine() -> dict:
    info = {**machine(), "threads": torch.get_num_threads()}
    if DEVICE.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(DEVICE)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp_clip,perceiver_d64,slow_clip")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--slow-reps", type=int, default=5, help="repetitions for slow_clip (>= 300 ms steps)")
    ap.add_argument("--slow-block", type=int, default=3)
    ap.add_argument("--watch-warmup", type=int, default=250,
                    help="steps of each watch before timing: the gradient probe measures everything on every "
                         "step of the first 50 and reaches its steady spacing at 250 (probes.schedule)")
    ap.add_argument("--slow-watch-warmup", type=int, default=0, help="the same for slow_clip (0: its first steps)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--no-wandb", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--breakdown", action="store_true", help="where watch's per-step time goes, per part")
    ap.add_argument("--breakdown-steps", type=int, default=100)
    ap.add_argument("--device", default="cpu", help="torch device of the models and batches (cpu, cuda)")
    ap.add_argument("--amp", choices=("none", "bf16"), default="none", help="bf16: forward under torch.autocast")
    ap.add_argument("--syncs", type=int, default=0,
                    help="CUDA: instead count the host synchronisations per step of each watch over this many steps")
    args = ap.parse_args()
    global DEVICE, AMP
    DEVICE, AMP = torch.device(args.device), args.amp == "bf16"
    if DEVICE.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.set_num_threads(args.threads)
    if args.syncs:
        if DEVICE.type != "cuda":
            raise SystemExit("--syncs: counts CUDA synchronisations; pass --device cuda")
        emit({"benchmark": "watch_cost --syncs", "machine": gpu_machine(), "amp": args.amp,
              "results": [host_syncs(m, args.syncs) for m in args.models.split(",")]}, args.out)
        return
    if args.breakdown:
        emit({"benchmark": "watch_cost --breakdown", "machine": {**machine(), "threads": torch.get_num_threads()},
              "load_avg_1m": round(os.getloadavg()[0], 2), "steps": args.breakdown_steps,
              "results": [breakdown(m, args.breakdown_steps) for m in args.models.split(",")]}, args.out)
        return
    load = os.getloadavg()
    t0 = time.perf_counter()
    wandb_mod = None if args.no_wandb else _wandb()
    results = []
    for name in args.models.split(","):
        slow = name == "slow_clip"
        results.append(bench_model(name, args.slow_reps if slow else args.reps, args.slow_block if slow else args.block,
                                   wandb_mod, args.slow_watch_warmup if slow else args.watch_warmup))
    if wandb_mod is not None:
        wandb_mod.finish()
    emit({"benchmark": "watch_cost", "machine": gpu_machine(), "device": str(DEVICE), "amp": args.amp,
          "load_avg_1m_before_after": [round(load[0], 2), round(os.getloadavg()[0], 2)],
          "seconds": round(time.perf_counter() - t0, 1), "reps": args.reps, "block_steps": args.block,
          "watch_warmup_steps": {"slow_clip": args.slow_watch_warmup, "others": args.watch_warmup},
          "targets": TARGETS, "results": results}, args.out)


if __name__ == "__main__":
    main()
