"""CPU time of `diagnose --help` (and other light commands) above a bare `python -c pass`.

Paired subprocess runs: each repetition runs `python -c pass` and then the command, and takes the
difference of their CPU time (user + system, from the children's rusage), so load on the machine hits
both halves of a pair alike; the median over repetitions is reported. Also reports whether the command
loaded torch, pandas or matplotlib (`python -X importtime`, once).

    python benchmarks/cli_startup.py [--reps 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._emit import emit  # noqa: E402

COMMANDS = {"help": ["--help"], "logs_help": ["logs", "--help"], "report_help": ["report", "--help"]}
HEAVY = ("torch", "pandas", "matplotlib", "reference_models")


def _cpu(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _heavy_imports(args: list[str]) -> list[str]:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "diagnose", *args], capture_output=True, text=True)
    loaded = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    return [m for m in HEAVY if m in loaded]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    env_python = [sys.executable]
    results = {}
    for name, cli_args in COMMANDS.items():
        extra, bare = [], []
        for _ in range(args.reps):
            b = _cpu([*env_python, "-c", "pass"])
            c = _cpu([*env_python, "-m", "diagnose", *cli_args])
            bare.append(b)
            extra.append(c - b)
        results[name] = {"argv": ["diagnose", *cli_args], "cpu_seconds_above_bare_python_median": round(
            statistics.median(extra), 3), "cpu_seconds_above_bare_python_min": round(min(extra), 3),
            "bare_python_cpu_seconds_median": round(statistics.median(bare), 3),
            "heavy_modules_loaded": _heavy_imports(cli_args)}
    emit({"benchmark": "cli_startup", "reps": args.reps, "target_help_cpu_seconds": 0.3, "commands": results,
          "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}, args.json)


if __name__ == "__main__":
    main()
