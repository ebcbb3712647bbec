"""What the fixes that see a script's own tensor operations cost a training step: the step time of a small
two-tower contrastive loop (MLP towers, batch 64, AdamW) with the `TorchFunctionMode` of
`diagnose.engine.interventions.ops` entered (the handlers of normalise_rows, diagonal_targets and fp32_outputs,
none of which changes anything here: the rows are unit, the targets the pairs, the logits fp32) against the same
loop without it. Blocks of steps alternate on identical model copies in one process (1 torch thread); the ratio
is the median of the paired block ratios. Only the runs of those fixes under `diagnose ablate --` pay it.

    python benchmarks/ops_mode_cost.py [--blocks 15] [--steps 20] [--width 256]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks._emit import emit, machine  # noqa: E402
from diagnose.engine.interventions.ops import watch_ops  # noqa: E402


class Towers(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(128, width), nn.GELU(), nn.Linear(width, 64))
        self.text = nn.Sequential(nn.Linear(96, width), nn.GELU(), nn.Linear(width, 64))
        self.logit_scale = nn.Parameter(torch.tensor(2.659))


def step(model, opt, x, t) -> None:
    img, txt = F.normalize(model.image(x), dim=-1), F.normalize(model.text(t), dim=-1)
    logits = model.logit_scale.exp() * img @ txt.t()
    labels = torch.arange(len(x))
    loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    opt.zero_grad()
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--width", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, t = torch.randn(64, 128), torch.randn(64, 96)
    plain = Towers(args.width)
    moded = copy.deepcopy(plain)
    opts = {id(m): torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (plain, moded)}
    shapes = {(64, 64)}

    def noop(call):  # what the fixes' handlers do where there is nothing to change: look and pass on
        out = call.run()
        if isinstance(out, torch.Tensor) and out.dim() == 2 and tuple(out.shape) in shapes:
            out.is_floating_point()
        return out

    handlers = {"*": noop, "matmul": noop, "mul": noop, "log_softmax": noop, "div": noop}

    def block(model, with_mode: bool) -> float:
        undo = watch_ops(handlers) if with_mode else None
        t0 = time.process_time()
        for _ in range(args.steps):
            step(model, opts[id(model)], x, t)
        dt = (time.process_time() - t0) / args.steps
        if undo:
            undo()
        return dt

    block(plain, False), block(moded, True)  # warm
    times = {"plain": [], "mode": []}
    for i in range(args.blocks):
        order = ((plain, False), (moded, True)) if i % 2 == 0 else ((moded, True), (plain, False))
        for model, with_mode in order:
            times["mode" if with_mode else "plain"].append(block(model, with_mode))
    ratios = [m / p for m, p in zip(times["mode"], times["plain"])]
    emit({"benchmark": "ops_mode_cost", "machine": machine(), "width": args.width, "steps_per_block": args.steps,
          "plain_ms": round(1e3 * statistics.median(times["plain"]), 3),
          "mode_ms": round(1e3 * statistics.median(times["mode"]), 3),
          "added_ms": round(1e3 * (statistics.median(times["mode"]) - statistics.median(times["plain"])), 3),
          "ratio": round(statistics.median(ratios), 3),
          "ratio_iqr": [round(q, 3) for q in statistics.quantiles(ratios, n=4)[::2]]}, None)


if __name__ == "__main__":
    main()
