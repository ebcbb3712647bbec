"""A real-fault case as a user's script: `python benchmarks/real_faults/script.py dev/case_lr_too_low`.

Runs the case's `train(watch)` with the real `diagnose.watch` and its own defaults (steps, seed), so
`diagnose ablate -- python benchmarks/real_faults/script.py HALF/CASE` treats it as it would any script:
the case file is not changed (the blind halves stay as their authors wrote them).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from run import load_case  # noqa: E402

import diagnose  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1 or "/" not in argv[0]:
        print("usage: python benchmarks/real_faults/script.py HALF/CASE (e.g. dev/case_lr_too_low)", file=sys.stderr)
        return 2
    half, stem = argv[0].split("/", 1)
    path = HERE / half / f"{stem.removesuffix('.py')}.py"
    if not path.is_file():
        print(f"{path}: no such case", file=sys.stderr)
        return 2
    load_case(path, half).train(diagnose.watch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
