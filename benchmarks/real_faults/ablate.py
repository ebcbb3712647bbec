"""`diagnose ablate --` on the real-fault cases: does the tool's own loop find the fix in a script it never saw?

For every case (every half, each once its blind run is done) whose ground-truth
cause has an intervention (`diagnose.engine.interventions.for_cause`), runs

    diagnose ablate --seeds 3 --fix auto --fix <each fix testing the cause> --max-fixes 1 \
        -- python benchmarks/real_faults/script.py HALF/CASE

(the interventions testing the true cause, plus the baseline's own candidates: what the tool would try
unaided) and records each fix's verdict. A case passes when a fix testing its cause is confirmed (a majority
of the 3 seeds) and at least one other candidate is refuted. Cases whose cause has no intervention are listed.
`--timing` instead measures the wall time of 5 interventions x 3 seeds x 100 steps on one case of a peer model.

    python benchmarks/real_faults/ablate.py [--half dev|test|...|test14|all] [--only STEM|HALF/STEM ...]
        [--out FILE] [--timing]
    python benchmarks/real_faults/ablate.py --render RESULTS.json [MORE.json ...]   (markdown; later files win)
    python benchmarks/real_faults/ablate.py --render all [--write-doc]   (every saved result, in the order measured;
        --write-doc also writes docs/ablate-cases.md)
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from diagnose.engine.interventions import for_cause  # noqa: E402

HALVES = ("dev", "test2", "test", "test3", "test4", "test5", "test6", "test7", "test8", "test9", "test10", "test11",
          "test12", "test13", "test14", "test15", "test16", "test17", "test18", "test19", "test20", "test21",
          "test22", "test23", "test24", "test25", "test26", "test27",
          "test28", "test29", "test30", "test31", "test32", "test33", "test34", "test35")
# every saved result in the order it was measured (a re-run after a fix was added comes after the half's run):
# `--render all` prints the table the README's totals come from
ALL_RESULTS = tuple(f"results-ablate-{n}.json" for n in (
    "all", "dev-rerun", "gather-dev", "gather-test2", "interventions2", "test45", "test3", "test4", "test5", "test6",
    "test4-clamp", "test10", "test10-uint8", "test9", "test9-heads", "test7", "test8", "test3-6-lrup", "test10-twins",
    "test11", "test12", "standardise", "test13", "test14", "test14-cc", "reinit-constant", "rescale-logits",
    "new-fixes", "log-probabilities", "diagonal-targets", "controls", "normalise", "loss-lines", "weight-decay", "test15",
    "reached", "test16", "duplicates", "gather-with-grad", "test17", "test17-resume", "located-pairs", "hand-gather",
    "test18", "test18-centre", "unsettled", "test19", "test19-new-fixes", "test19-resume", "test19-stages", "test20", "test20-fixes", "test21",
    "schedules", "test22", "test22-fixes", "zero-head", "test23", "lr-guard", "test24", "test24-fixes", "test25",
    "test25-fixes", "shuffle", "test26", "test26-fixes", "test27", "lr-peak", "gather-layout", "test27-fixes",
    "test28", "group-defaults", "test29", "autocast-cache", "test30", "test30-fixes",
    "outside-writes", "test31", "test32", "test31-fixes",
    "gathered-scale", "test33", "test33-fixes", "test34", "test34-fixes", "test35", "test35-fixes"))
TIMING_CASE = "dev/case_lr_too_low"  # perceiver-pytorch aligner (a peer model), 100 steps
TIMING_FIXES = ("lr_up", "lr_down", "warmup", "clip_grad", "fix_temperature")


def cause_of(path: Path) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith("CAUSE"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return None


def ablate(case: str, fixes: list[str], work: Path, seeds: int = 3, steps: int | None = None,
           max_fixes: int = 2, script_steps: int | None = None) -> dict:
    out = work / case.replace("/", "__")
    cmd = [sys.executable, "-m", "diagnose", "ablate", "--quiet", "--seeds", str(seeds), "--workers", "2",
           "--max-fixes", str(max_fixes), "--out", str(out), *(a for f in fixes for a in ("--fix", f)),
           *(["--steps", str(steps)] if steps else []), "--", sys.executable, str(HERE / "script.py"), case,
           *(["--steps", str(script_steps)] if script_steps else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if not (out / "summary.json").is_file():
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"],
                "wall_s": round(wall, 1)}
    summary = json.loads((out / "summary.json").read_text())
    learned = summary.get("script_ablation", {}).get("baseline_learned", [])
    return {"wall_s": round(wall, 1), "exit": proc.returncode, "baseline_learned": f"{sum(learned)}/{len(learned)}",
            "numbers": {h["id"]: [(d.get("baseline", {}).get("loss_over_lnB"), d.get("fix", {}).get("loss_over_lnB"))
                                  for d in h["per_seed"]] for h in summary["hypotheses"]},
            "verdicts": {h["id"]: {"verdict": h["verdict"], "tally": h["tally"], "source": h["source"]}
                         for h in summary["hypotheses"]},
            "baseline_causes": [c["cause"] for c in summary["runs"][0].get("root_causes", [])][:3]}


def run_cases(halves: list[str], only: list[str], work: Path, max_fixes: int, partial: Path | None) -> dict:
    rows, without = [], []
    for half in halves:
        for path in sorted((HERE / half).glob("case_*.py")):
            if only and path.stem not in only and f"{half}/{path.stem}" not in only:
                continue
            cause, case = cause_of(path), f"{half}/{path.stem}"
            right = for_cause(cause) if cause else []
            if not right:
                without.append({"case": case, "cause": cause})
                continue
            res = ablate(case, ["auto", *right], work, max_fixes=max_fixes)
            verdicts = res.get("verdicts", {})
            confirmed = [f for f in right if verdicts.get(f, {}).get("verdict") == "confirmed"]
            refuted_wrong = [f for f, v in verdicts.items() if f not in right and v["verdict"] == "refuted"]
            rows.append({"case": case, "cause": cause, "right_fixes": right, **res,
                         "right_confirmed": confirmed, "wrong_refuted": refuted_wrong,
                         "pass": bool(confirmed) and bool(refuted_wrong)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            if partial is not None:  # what is done so far survives an interrupted run
                partial.write_text(json.dumps({"cases": rows, "without_intervention": without}, indent=1) + "\n")
    per_half = {}
    for half in halves:
        hr = [r for r in rows if r["case"].startswith(half + "/")]
        per_half[half] = {"cases_with_intervention": len(hr), "right_fix_confirmed": sum(bool(r["right_confirmed"])
                                                                                         for r in hr),
                          "wrong_refuted": sum(bool(r["wrong_refuted"]) for r in hr),
                          "pass": sum(r["pass"] for r in hr)}
    return {"cases": rows, "without_intervention": without, "totals": per_half}


def render(files: list[str]) -> str:
    """Markdown table of saved results (a later file's row replaces an earlier one for the same case); a case passes
    when a fix testing its cause (the catalogue as it is now) is confirmed and another candidate is refuted: any
    refuted fix, also one that tests the same cause by another mechanism (`clip_grad` on an fp16 Adam eps underflow:
    nonfinite_divergence has five fixes). The per-half table also counts the stricter reading, a refuted fix that
    tests another cause."""
    rows: dict[str, dict] = {}
    without: dict[str, str] = {}
    for f in files:
        data = json.loads(Path(f).read_text())
        rows.update({r["case"]: r for r in data["cases"]})
        without.update({w["case"]: w["cause"] for w in data.get("without_intervention", [])})
    lines = ["| case | cause | verdicts (3 seeds) | right fix confirmed | another candidate refuted |",
             "|---|---|---|---|---|"]
    per_half: dict[str, list[int]] = {}
    for case, r in rows.items():
        right = for_cause(r["cause"])
        v = {k: x["verdict"] for k, x in r.get("verdicts", {}).items()}
        conf = any(v.get(f) == "confirmed" for f in right)
        refuted = any(x == "refuted" for x in v.values())
        other_cause = any(x == "refuted" for f, x in v.items() if f not in right)
        tally = per_half.setdefault(case.split("/")[0], [0, 0, 0, 0, 0])
        for i, hit in enumerate((True, conf, refuted, other_cause, conf and refuted)):
            tally[i] += hit
        shown = ", ".join(f"`{k}` {x}" for k, x in v.items()) or r.get("error", "")
        lines.append(f"| {case} | `{r['cause']}` | {shown} | {'yes' if conf else 'no'} | {'yes' if refuted else 'no'} |")
    lines += ["", "| half | cases with a fix | right fix confirmed | another candidate refuted | of them a fix for "
              "another cause | both |", "|---|---|---|---|---|---|"]
    lines += [f"| {h} | {' | '.join(map(str, t))} |" for h, t in per_half.items()]
    total = [sum(t[i] for t in per_half.values()) for i in range(5)]
    lines += [f"| all | {' | '.join(map(str, total))} |"]
    without = {c: k for c, k in without.items() if c not in rows}  # a later run with a fix for it replaces it
    lines += ["", "Without a fix that tests the cause: " + ", ".join(f"{c} (`{k}`)" for c, k in without.items())]
    return "\n".join(lines)


CASES_DOC = ROOT / "docs" / "ablate-cases.md"  # `--render all` with a header: every case's current verdicts


def cases_doc() -> str:
    """docs/ablate-cases.md: the latest verdicts of every case, from every saved result (tests check it is current)."""
    files = [str(HERE / f) for f in ALL_RESULTS if (HERE / f).is_file()]
    return ("# Every real-fault case under `diagnose ablate --`: the latest verdicts\n\n"
            "Generated by `python benchmarks/real_faults/ablate.py --render all --write-doc` from every saved result, "
            "in the order measured (a later run of a case replaces its row). How the runs were made and what each "
            "change did: [ablate.md](ablate.md#measured).\n\n" + render(files) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--half", default="all", choices=[*HALVES, "all"])
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--out")
    ap.add_argument("--timing", action="store_true")
    ap.add_argument("--render", nargs="+", metavar="JSON", help="print saved results as a markdown table, then exit")
    ap.add_argument("--write-doc", action="store_true", help=f"with --render all: also write {CASES_DOC.name}")
    ap.add_argument("--max-fixes", type=int, default=1, help="the baseline's own candidates beside the right fixes")
    args = ap.parse_args()
    if args.render:
        files = [str(HERE / f) for f in ALL_RESULTS if (HERE / f).is_file()] if args.render == ["all"] else args.render
        if args.write_doc and args.render == ["all"]:
            CASES_DOC.write_text(cases_doc())
        print(render(files))
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.timing:
            res = ablate(TIMING_CASE, list(TIMING_FIXES), Path(tmp), steps=100, script_steps=100)
            result = {"timing": {"case": TIMING_CASE, "fixes": list(TIMING_FIXES), "seeds": 3, "steps": 100,
                                 "runs": 3 * (1 + len(TIMING_FIXES)), **res}}
        else:
            result = run_cases(list(HALVES) if args.half == "all" else [args.half], args.only, Path(tmp),
                               args.max_fixes, Path(args.out) if args.out else None)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "load_1min": round(os.getloadavg()[0], 2)}
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
