"""Replay one rule on a watched run's records every 5 observed steps: when would its finding appear, and would it
alarm? The study behind a gate change: run it on the cases the change is for and on the healthy runs.

Each run is watched with the rules off (`alarm="off"`, `budget=None`); then, on the records up to every fifth
observed step, the rule's `check` and, where it finds something, its `alarm` gate run as the online monitor
would. Prints one line per run (the first step whose records alarm) and the readings at a few steps.

    python benchmarks/real_faults/replay.py RULE case PATH.py [PATH.py ...]
    python benchmarks/real_faults/replay.py RULE healthy FAMILY|all [SEED ...]
e.g. `replay.py PairsUnrelated healthy open_clip 34` or `replay.py ParamsOutsideOptimizer case test9/case_x_...py`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

import torch  # noqa: E402

import diagnose  # noqa: E402
import diagnose.core.rules as R  # noqa: E402
from diagnose.core.rules.gradients import cumulative_update  # noqa: E402


def watched(train) -> diagnose.Watch:
    held = {}

    def open_watch(model, opt, **kw):
        held["w"] = diagnose.watch(model, opt, out=None, name="replay", alarm="off", budget=None, **kw)
        return held["w"]

    train(open_watch)
    return held["w"]


def replay(rule, w, name: str) -> None:
    df, ctx = w.records, w._context()
    steps = sorted(df["step"].unique())
    rows, first = [], None
    for t in steps[4::5]:
        upto = df[df.step <= t]
        found = rule.check(upto, ctx)
        alarm = bool(found) and bool(rule.alarm(found[0], upto))
        first = t if alarm and first is None else first
        ev = found[0].evidence if found else {}
        rows.append((int(t), found[0].severity if found else "-", alarm, round(cumulative_update(upto), 3),
                     {k: v for k, v in ev.items() if not isinstance(v, (list, dict))}))
    print(f"== {name}: first alarm at step {first}", flush=True)
    for r in rows[:4] + rows[-2:]:
        print("   ", r)


def main() -> None:
    rules = {r.name: r for r in R.RULES}
    if len(sys.argv) < 4 or sys.argv[2] not in ("case", "healthy"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] not in rules:
        print(f"replay.py: unknown rule {sys.argv[1]!r}; expected one of {', '.join(sorted(rules))}", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)
    rule = rules[sys.argv[1]]
    if sys.argv[2] == "case":
        for arg in sys.argv[3:]:
            path = Path(arg) if Path(arg).is_file() else HERE / arg
            spec = importlib.util.spec_from_file_location("case_" + path.stem, path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            replay(rule, watched(mod.train), path.stem)
        return
    import healthy

    family, seeds = sys.argv[3], set(sys.argv[4:])
    for sp in healthy.SPECS:
        if (family != "all" and sp["model"] != family) or sp["model"] == "lightning" or (
                seeds and str(sp["seed"]) not in seeds):
            continue  # Lightning runs open their watch through a callback: not replayed here
        replay(rule, watched(lambda f, sp=sp: healthy.train(f, **sp)), f"{sp['model']}-s{sp['seed']}-b{sp['batch']}")


if __name__ == "__main__":
    main()
