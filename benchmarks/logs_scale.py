"""Time and peak RSS of `diagnose logs` on generated logs of 20 MB and 200 MB (CSV, JSON lines, text,
and a 3000-column CSV).

Each log is written once to a temporary directory (a run at chance: train loss ~ln 64 with its CLIP
and MRL components, lr, sparse val R@1 rows), then `diagnose logs FILE --batch-size 64 --out DIR` runs in
a child process (the command writes its report, then leaves the loss plot to a detached child: that child's CPU is
measured apart, `plot_child_cpu_s`, by running it again on the directory); its wall time and its own peak RSS
(os.wait4's rusage of that child, read by a small launcher process so the generator's memory does not count) are
reported, with whether it exited 0/1 (a diagnosis) and found `loss_at_chance`, and its CPU time.

For CSV logs also the parse alone against pandas (issue 27: `diagnose logs` parsing at the speed of a
plain pandas read): in one child process, `diagnose.core.logs.read_log(path)` and `pandas.read_csv(path)`
(all columns, default options) alternate --reps times (ABBA order), process CPU time each; `cpu_ratio`
is the median of the paired ratios read_log / read_csv. Their peak RSS comes from one more child each. And the
command against a whole `python -c "import pandas; pandas.read_csv(FILE)"` process (both pay an interpreter and
their imports), run in turn --reps times: `command_vs_pandas_process` (median of the paired CPU ratios).
Prints one JSON object.
Usage: python benchmarks/logs_scale.py [--sizes 20,200] [--formats csv,jsonl,text,csv_wide] [--reps 7]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
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
                  "cpu": usage.ru_utime + usage.ru_stime,
                  "maxrss_kb": usage.ru_maxrss, "stderr": err.decode(errors="replace")[-300:]}))
"""

# The parse alone, paired with pandas.read_csv in the same process (imports done before timing).
_PAIRED = """
import json, statistics, sys, time
from pathlib import Path
import pandas as pd
from diagnose.core.logs import read_log
path, reps = Path(sys.argv[1]), int(sys.argv[2])
ours = {"read_log": lambda: read_log(path), "read_csv": lambda: pd.read_csv(path)}
ours["read_log"](); ours["read_csv"]()  # warm: file cache, lazy imports
times = {k: [] for k in ours}
for i in range(reps):
    for k in (("read_log", "read_csv") if i % 2 == 0 else ("read_csv", "read_log")):
        t = time.process_time(); ours[k](); times[k].append(time.process_time() - t)
ratios = [a / b for a, b in zip(times["read_log"], times["read_csv"])]
print(json.dumps({"read_log_cpu_s": round(statistics.median(times["read_log"]), 3),
                  "read_csv_cpu_s": round(statistics.median(times["read_csv"]), 3),
                  "cpu_ratio": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios]}))
"""
_ONE = """
import sys
from pathlib import Path
import pandas as pd
from diagnose.core.logs import read_log
read_log(Path(sys.argv[1])) if sys.argv[2] == "read_log" else pd.read_csv(sys.argv[1])
"""


def _launch(*cmd: str) -> dict:
    return json.loads(subprocess.run([sys.executable, "-c", _LAUNCH, *cmd], cwd=ROOT, capture_output=True, text=True,
                                     check=True).stdout)


def _command(path: Path, out: Path) -> dict:
    return _launch(sys.executable, "-c", "import sys; from diagnose.cli import main; sys.argv[0] = 'diagnose'; main()",
                   "logs", str(path), "--batch-size", "64", "--out", str(out))


def _run(path: Path, out: Path) -> dict:
    res = _command(path, out)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    ids = sorted({f["id"] for f in summary.get("findings", [])})
    plot = {}
    if (out / "log_curves.csv").exists():  # the loss plot: drawn by a detached child after the command; its cost
        digest = hashlib.sha256((out / "summary.json").read_bytes()).hexdigest()  # measured the same way, apart
        child = [sys.executable, "-m", "diagnose.engine.plots_child", str(out), digest]
        p = json.loads(subprocess.run([sys.executable, "-c", _LAUNCH, *child], cwd=ROOT, capture_output=True,
                                      text=True, check=True).stdout)
        plot = {"plot_child_cpu_s": round(p["cpu"], 2), "plot_child_exit": p["code"]}
    return {"seconds": round(res["wall"], 2), "cpu_s": round(res["cpu"], 2), **plot,
            "peak_rss_mb": round(res["maxrss_kb"] / 1024, 1), "exit_code": res["code"],
            "loss_at_chance": "loss_at_chance" in ids, "findings": ids,
            "stderr_tail": res["stderr"].strip().splitlines()[-1:] if res["code"] > 1 else []}


def _parse_vs_pandas(path: Path, reps: int) -> dict:
    """read_log vs pandas.read_csv on the same file: paired CPU times, and each one's peak RSS."""
    out = json.loads(subprocess.run([sys.executable, "-c", _PAIRED, str(path), str(reps)], cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout)
    for what in ("read_log", "read_csv"):
        res = json.loads(subprocess.run([sys.executable, "-c", _LAUNCH, sys.executable, "-c", _ONE, str(path), what],
                                        cwd=ROOT, capture_output=True, text=True, check=True).stdout)
        out[f"{what}_peak_rss_mb"] = round(res["maxrss_kb"] / 1024, 1)
    return out


def _command_vs_pandas_process(path: Path, out: Path, reps: int) -> dict:
    """Like for like: the whole command against a whole `python -c "import pandas; pandas.read_csv(F)"` process
    (both pay an interpreter and their imports), run in turn `reps` times (ABBA); the median of the paired CPU
    ratios."""
    pandas_cmd = (sys.executable, "-c", "import sys, pandas; pandas.read_csv(sys.argv[1])", str(path))
    cmd, pd_, ratios = [], [], []
    for i in range(reps):
        first, second = (("cmd", "pd"), ("pd", "cmd"))[i % 2]
        got = {}
        for what in (first, second):
            got[what] = (_command(path, out / f"rep{i}") if what == "cmd" else _launch(*pandas_cmd))["cpu"]
        cmd.append(got["cmd"])
        pd_.append(got["pd"])
        ratios.append(got["cmd"] / got["pd"])
    med = statistics.median
    return {"command_cpu_s": round(med(cmd), 3), "pandas_process_cpu_s": round(med(pd_), 3),
            "command_cpu_over_pandas_process": round(med(ratios), 3), "ratios": [round(r, 3) for r in ratios]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20,200", help="sizes in MB")
    ap.add_argument("--formats", default="csv,jsonl,text,csv_wide")
    ap.add_argument("--reps", type=int, default=7, help="paired read_log / read_csv repetitions (CSV logs)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory(prefix="logs_scale_") as tmp:
        tiny = Path(tmp) / "tiny.csv"  # the cost of starting the command (imports) on a 10-row log
        tiny.write_text("step,loss\n" + "".join(f"{i},4.16\n" for i in range(10)))
        baseline = _run(tiny, Path(tmp) / "out_tiny")
        baseline = {k: baseline[k] for k in ("seconds", "cpu_s", "peak_rss_mb")}
        for mb in (int(x) for x in args.sizes.split(",")):
            for fmt in args.formats.split(","):
                path = Path(tmp) / f"log_{mb}mb.{'csv' if fmt.startswith('csv') else fmt if fmt == 'jsonl' else 'log'}"
                _write(fmt, path, mb * 1_000_000, rng)
                res = _run(path, Path(tmp) / f"out_{fmt}_{mb}")
                results.append({"format": fmt, "target_mb": mb, "file_mb": round(path.stat().st_size / 1e6, 1), **res})
                if fmt == "csv" and args.reps > 0:
                    results[-1]["parse_vs_pandas"] = _parse_vs_pandas(path, args.reps)
                    pandas_cpu = results[-1]["parse_vs_pandas"]["read_csv_cpu_s"]
                    results[-1]["command_cpu_over_read_csv"] = round(res["cpu_s"] / pandas_cpu, 2)
                    results[-1]["command_vs_pandas_process"] = _command_vs_pandas_process(
                        path, Path(tmp) / f"paired_{fmt}_{mb}", args.reps)
                    # the same without the command's start-up (the imports: the 10-row log's CPU)
                    results[-1]["command_cpu_above_startup_over_read_csv"] = round(
                        (res["cpu_s"] - baseline["cpu_s"]) / pandas_cpu, 2)
                print(json.dumps(results[-1]), file=sys.stderr)
                path.unlink()
    print(json.dumps({"benchmark": "logs_scale", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "baseline": baseline, "results": results}, indent=2))


if __name__ == "__main__":
    main()
