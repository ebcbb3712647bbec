"""A real-fault case as a user's script: `python benchmarks/real_faults/script.py dev/case_lr_too_low [--steps N]`.

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
    steps = None
    if len(argv) == 3 and argv[1] == "--steps" and argv[2].isdigit():
        argv, steps = argv[:1], int(argv[2])
    if len(argv) != 1 or "/" not in argv[0]:
        print("usage: python benchmarks/real_faults/script.py HALF/CASE [--steps N] (e.g. dev/case_lr_too_low)",
              file=sys.stderr)
        return 2
    half, stem = argv[0].split("/", 1)
    path = HERE / half / f"{stem.removesuffix('.py')}.py"
    if not path.is_file():
        print(f"{path}: no such case", file=sys.stderr)
        return 2
    train = load_case(path, half).train
    train(diagnose.watch, **({"steps": steps} if steps else {}))  # the case's own default length otherwise
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
