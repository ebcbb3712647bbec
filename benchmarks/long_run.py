"""A long run under `diagnose.watch`: bounded records and a report that renders in seconds.

A tiny contrastive model (two linear towers) trains for `--steps` steps (default 100k) under
`diagnose.watch` with online rules on, writing a run directory at the end; then `diagnose report`
rebuilds that directory. Prints one JSON object: rows kept vs rows produced, the record bound's
stride, peak RSS of this process, seconds to train, to write the run directory (analysis, plots,
report) and to rebuild it.

Usage: python benchmarks/long_run.py [--steps 100000] [--probes cheap|all] [--max-records 500000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diagnose  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--probes", default="cheap")
    ap.add_argument("--max-records", type=int, default=500_000)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    B = 32
    img_in, txt_in = torch.randn(4096, 16), torch.randn(4096, 12)
    txt_in[:, :8] = img_in[:, :8]  # paired inputs share a signal
    model = nn.ModuleDict({"image": nn.Linear(16, 16), "text": nn.Linear(12, 16)})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = Path(tempfile.mkdtemp()) / "run"
    t0 = time.perf_counter()
    with diagnose.watch(model, opt, out=out, alarm="off", probes=a.probes, batch_size=B,
                        max_records=a.max_records) as w:
        for step in range(a.steps):
            idx = torch.randint(0, 4096, (B,))
            img = F.normalize(model["image"](img_in[idx]), dim=-1)
            txt = F.normalize(model["text"](txt_in[idx]), dim=-1)
            logits = 10 * img @ txt.T
            labels = torch.arange(B)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()
            if step == a.steps - 1:
                t_train = time.perf_counter() - t0
    t_write = time.perf_counter() - t0 - t_train
    from typer.testing import CliRunner

    from diagnose.cli import app

    t1 = time.perf_counter()
    res = CliRunner().invoke(app, ["report", str(out), "--quiet"])
    t_report = time.perf_counter() - t1
    buf = w.session.buffer
    print(json.dumps({
        "benchmark": "long_run", "steps": a.steps, "probes": a.probes, "max_records": a.max_records,
        "rows_kept": len(w.records), "rows_dropped": buf.dropped, "stride": buf.stride,
        "dense_from_step": buf.dense_from,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "train_seconds": round(t_train, 1), "write_run_dir_seconds": round(t_write, 2),
        "report_rebuild_seconds": round(t_report, 2), "report_exit_code": res.exit_code,
        "verdict": w.result().runs[0].verdict.label,
    }, indent=2))


if __name__ == "__main__":
    main()
