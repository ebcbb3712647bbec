"""Time to close a `diagnose.watch`: from leaving the block until report.md and summary.json are written.

A small alignment model (MLP projector over mean-pooled tokens + text projection, ~0.1M parameters)
trains for `--steps` steps (default 1,000) under `diagnose.watch(probes="all")`; the benchmark times
`close()` (what the user's process waits for) in phases: the background rules finishing and the probes
removed, the whole-run analysis, and the run directory written. It also reports when the plots and the
report that shows them were in place (a detached child process renders them: `plots_seconds`, from the
start of close(), waiting up to `--plot-wait` seconds for the child).

    python benchmarks/close_cost.py [--steps 1000] [--reps 1] [--plots background|inline] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import diagnose  # noqa: E402
from benchmarks._emit import emit, machine  # noqa: E402
from diagnose.engine import plots_child, watcher  # noqa: E402

B, T, D, DT, E = 32, 8, 32, 24, 32


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, E))
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.proj(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def _phases() -> dict[str, float]:
    """Wrap the three parts of Watch.close in timers (the benchmark's own instrumentation)."""
    times: dict[str, float] = {}
    originals = {"finish": watcher.Watch._finish_background, "result": watcher.Watch.result,
                 "write": watcher.write_run_dir}

    def timed(key, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[key] = times.get(key, 0.0) + time.perf_counter() - t0
        return wrapper

    watcher.Watch._finish_background = timed("finish_background", originals["finish"])
    watcher.Watch.result = timed("analyse", originals["result"])
    watcher.write_run_dir = timed("write_run_dir", originals["write"])
    return times


def one(steps: int, out: Path, plot_wait: float, plots: str = "background") -> dict:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    tokens, texts = torch.randn(1024, T, D, generator=g), torch.randn(1024, DT, generator=g)
    model = Aligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    w = diagnose.watch(model, opt, out=out, name="bench", alarm="off", probes="all", plots=plots)
    for step in range(steps):
        idx = torch.randint(0, 1024, (B,))
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        labels = torch.arange(B)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        opt.zero_grad()
        loss.backward()
        w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits, batch_size=B)
        opt.step()
    times = _phases()
    rows = len(w.records)
    t0 = time.perf_counter()
    w.close()
    close_s = time.perf_counter() - t0
    assert (out / "report.md").is_file() and (out / "summary.json").is_file()
    first_report = (out / "report.md").read_text()
    code = plots_child.wait(out, plot_wait)  # None: rendered inline (no child), or still running
    plots_s = time.perf_counter() - t0
    report = (out / "report.md").read_text()
    pngs = sorted(out.glob("*.png"))
    return {"close_seconds": round(close_s, 3), "phases_seconds": {k: round(v, 3) for k, v in times.items()},
            "report_at_close_names_plots": "](losses.png)" in first_report,
            "plots_child_exit": code, "plots_seconds": round(plots_s, 3) if pngs else None, "plots": len(pngs),
            "final_report_names_plots": "](losses.png)" in report, "records": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--plot-wait", type=float, default=60.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plots", choices=("background", "inline"), default="background",
                    help="inline: the plots rendered inside close(), as before the background renderer")
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = []
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one(args.steps, Path(tmp) / "run", args.plot_wait, args.plots))
    closes = [r["close_seconds"] for r in runs]
    emit({"benchmark": "close_cost", "steps": args.steps, "plots": args.plots, "target_close_seconds": 3.0,
          "close_seconds_median": round(statistics.median(closes), 3), "runs": runs, "machine": machine()},
         args.json)


if __name__ == "__main__":
    main()
