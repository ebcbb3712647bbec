"""Time to verdict: wall time of the two main commands at the default scale, as a user runs them.

Runs `diagnose compare perceiver direct` and `diagnose ablate --config perceiver` in subprocesses
(default scale and steps, `--quiet`, output in a temporary directory) and prints one JSON object with
each command's wall time, exit code (1 = error findings, the expected answer here) and the machine's
core count. Other jobs on the machine slow these down: report the load with the numbers.

Usage: python benchmarks/time_to_verdict.py [--only compare|ablate] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "compare": ["compare", "perceiver", "direct"],
    "ablate": ["ablate", "--config", "perceiver"],
}


def diagnose_exe() -> list[str]:
    exe = shutil.which("diagnose", path=str(Path(sys.executable).parent)) or shutil.which("diagnose")
    return [exe] if exe else [sys.executable, "-m", "diagnose.cli"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(COMMANDS), nargs="*", default=None)
    ap.add_argument("--keep", type=Path, default=None, help="write run directories here instead of a temp dir")
    args = ap.parse_args(argv)
    base = args.keep or Path(tempfile.mkdtemp(prefix="ttv-"))
    results = {}
    for name in args.only or list(COMMANDS):
        out = base / name
        cmd = [*diagnose_exe(), *COMMANDS[name], "--out", str(out), "--quiet"]
        load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        results[name] = {"command": "diagnose " + " ".join(COMMANDS[name]), "wall_seconds": round(wall, 1),
                         "exit_code": proc.returncode, "load_avg_1min_before": load_before,
                         "stderr_tail": proc.stderr.strip().splitlines()[-1:] if proc.returncode not in (0, 1) else []}
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)
    report = {"benchmark": "time_to_verdict", "results": results,
              "machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                          "python": platform.python_version()}}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
