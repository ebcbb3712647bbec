"""Time and peak RSS of `diagnose logs` on generated logs of 20 MB and 200 MB (CSV, JSON lines, text,
and a 3000-column CSV).

Each log is written once to a temporary directory (a run at chance: train loss ~ln 64 with its CLIP
and MRL components, lr, sparse val R@1 rows), then `diagnose logs FILE --batch-size 64 --out DIR` runs in
a child process; its wall time and its own peak RSS (os.wait4's rusage of that child, read by a small
launcher process so the generator's memory does not count) are reported,
with whether it exited 0/1 (a diagnosis) and found `loss_at_chance`. Prints one JSON object.
Usage: python benchmarks/logs_scale.py [--sizes 20,200] [--formats csv,jsonl,text,csv_wide]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 200_000


def _frame(start: int, n: int, rng) -> pd.DataFrame:
    step = np.arange(start, start + n)
    clip = math.log(64) + rng.normal(0, 0.05, n)
    mrl = clip + rng.normal(0, 0.01, n)
    df = pd.DataFrame({"epoch": step // 1000, "step": step, "train/loss_step": (0.25 * clip + mrl).round(5),
                       "train/loss_clip": clip.round(5), "train/loss_mrl": mrl.round(5),
                       "lr-AdamW": np.full(n, 1e-4)})
    df["val/r@1"] = np.where(step % 1000 == 999, 0.002, np.nan)
    return df


def _write(fmt: str, path: Path, target: int, rng) -> None:
    written, start = 0, 0
    with open(path, "w") as fh:
        while written < target:
            df = _frame(start, CHUNK, rng)
            if fmt == "csv":
                text = df.to_csv(index=False, header=start == 0, float_format="%.6g")
            elif fmt == "csv_wide":
                extra = pd.DataFrame(rng.random((CHUNK // 50, 3000)).round(3),
                                     columns=[f"feature_{i}" for i in range(3000)])
                df = pd.concat([df.iloc[: CHUNK // 50].reset_index(drop=True), extra], axis=1)
                text = df.to_csv(index=False, header=start == 0, float_format="%.6g")
                start -= CHUNK - CHUNK // 50
            elif fmt == "jsonl":
                text = df.to_json(orient="records", lines=True) + "\n"
            else:
                lines = [f"step {s} Train Loss: {t:.4f} (CLIP: {c:.4f}, MRL: {m:.4f})"
                         for s, t, c, m in zip(df["step"], df["train/loss_step"], df["train/loss_clip"],
                                               df["train/loss_mrl"])]
                text = "\n".join(lines) + "\n"
            fh.write(text)
            written += len(text)
            start += CHUNK


# The child is started by a small launcher process that reads its rusage with os.wait4: on Linux a
# process's ru_maxrss starts from the high-water mark of the memory it was forked from, so a child
# forked straight from this (large, file-generating) process would report this process's peak.
_LAUNCH = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = p.stderr.read()
_, status, usage = os.wait4(p.pid, 0)
print(json.dumps({"wall": time.perf_counter() - t0, "code": os.waitstatus_to_exitcode(status),
                  "maxrss_kb": usage.ru_maxrss, "stderr": err.decode(errors="replace")[-300:]}))
"""


def _run(path: Path, out: Path) -> dict:
    cmd = [sys.executable, "-c", "import sys; from diagnose.cli import main; sys.argv[0] = 'diagnose'; main()",
           "logs", str(path), "--batch-size", "64", "--out", str(out)]
    res = json.loads(subprocess.run([sys.executable, "-c", _LAUNCH, *cmd], cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    ids = sorted({f["id"] for f in summary.get("findings", [])})
    return {"seconds": round(res["wall"], 2), "peak_rss_mb": round(res["maxrss_kb"] / 1024, 1),
            "exit_code": res["code"],
            "loss_at_chance": "loss_at_chance" in ids, "findings": ids,
            "stderr_tail": res["stderr"].strip().splitlines()[-1:] if res["code"] > 1 else []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20,200", help="sizes in MB")
    ap.add_argument("--formats", default="csv,jsonl,text,csv_wide")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory(prefix="logs_scale_") as tmp:
        tiny = Path(tmp) / "tiny.csv"  # the cost of starting the command (imports) on a 10-row log
        tiny.write_text("step,loss\n" + "".join(f"{i},4.16\n" for i in range(10)))
        baseline = _run(tiny, Path(tmp) / "out_tiny")
        baseline = {k: baseline[k] for k in ("seconds", "peak_rss_mb")}
        for mb in (int(x) for x in args.sizes.split(",")):
            for fmt in args.formats.split(","):
                path = Path(tmp) / f"log_{mb}mb.{'csv' if fmt.startswith('csv') else fmt if fmt == 'jsonl' else 'log'}"
                _write(fmt, path, mb * 1_000_000, rng)
                res = _run(path, Path(tmp) / f"out_{fmt}_{mb}")
                results.append({"format": fmt, "target_mb": mb, "file_mb": round(path.stat().st_size / 1e6, 1), **res})
                print(json.dumps(results[-1]), file=sys.stderr)
                path.unlink()
    print(json.dumps({"benchmark": "logs_scale", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "baseline": baseline, "results": results}, indent=2))


if __name__ == "__main__":
    main()
