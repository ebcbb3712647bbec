"""Markdown tables from `run.py` results: the halves side by side, then every case.

    python benchmarks/real_faults/table.py FILE [FILE ...] [--label HALF=TEXT ...] [--once FILE ...]

Each FILE is the JSON of one `run.py --half H` run (or `--healthy-only`); the healthy column comes from
a file with healthy runs. `--label test4="blind, once"` names a half's column. `--once` files are the
blind halves' single runs at their freeze: their summary rows come first, and each of their cases gets
a column with that run's answer beside the current one. Prints markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = (("top-1 root cause", "top1"), ("top-3 root cause", "top3"), ("an error alarm during the run", "detection_rate"),
        ("median steps to the first error alarm", "median_steps_to_detection"),
        ("an error alarm, watch's default budget", "detection_rate_default_budget"))


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) and v <= 1 else str(v)


def summary(halves: dict[str, dict], healthy: dict | None, labels: dict[str, str]) -> str:
    heads = [f"{h} ({labels.get(h, '')}, {t['cases']})" if labels.get(h) else f"{h} ({t['cases']})"
             for h, t in halves.items()]
    lines = ["| | " + " | ".join(heads) + (" | healthy |" if healthy else " |"),
             "|---|" + "---|" * (len(halves) + bool(healthy))]
    for text, key in ROWS:
        cells = [_fmt(t.get(key)) for t in halves.values()]
        lines.append(f"| {text} | " + " | ".join(cells) + (" | - |" if healthy else " |"))
    if healthy:
        lines.append("| healthy runs with an error alarm (every 5 steps / default) / error findings | "
                     + " | ".join("-" for _ in halves)
                     + f" | {healthy['runs_alarmed']} / {healthy['runs_alarmed_default']} / "
                       f"{healthy['error_findings']} of {healthy['runs']} |")
    return "\n".join(lines)


def _answer(c: dict) -> str:
    alarm = f"alarm {c['first_error_alarm_step']}" if c["detected"] else "no alarm"
    return f"{'✓' if c['top1_correct'] else '✗'} {c['top3'][0] if c['top3'] else '-'}, {alarm}"


def cases(rows: list[dict], once: dict | None = None) -> str:
    once = once or {}
    lines = ["| half | case | family | ground truth | top-1 (top-3) | first error alarm | blind run at the freeze |",
             "|---|---|---|---|---|---|---|"]
    for c in rows:
        top = c["top3"]
        mark = "✓" if c["top1_correct"] else "✗"
        shown = f"{mark} {top[0]}" + (f", {', '.join(top[1:])}" if len(top) > 1 else "") if top else f"{mark} -"
        alarm = f"{c['first_error_alarm_step']} ({c['first_error_alarm']})" if c["detected"] else "none"
        first = once.get((c["half"], c["case"]))
        lines.append(f"| {c['half']} | `{c['case'].removeprefix('case_')}` | {c.get('family') or '-'} | "
                     f"`{c['ground_truth']}` | {shown} | {alarm} | {_answer(first) if first else ''} |")
    return "\n".join(lines)


def healthy_totals(runs: list[dict]) -> dict:
    return {"runs": len(runs), "runs_alarmed": sum(bool(r["error_alarms"]) for r in runs),
            "runs_alarmed_default": sum(bool(r["error_alarms_default_budget"]) for r in runs),
            "error_findings": sum(bool(r["error_findings"]) for r in runs)}


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--label", action="append", default=[], help="HALF=TEXT")
    ap.add_argument("--once", nargs="*", type=Path, default=[], help="blind halves' single runs at their freeze")
    args = ap.parse_args(argv)
    labels = dict(x.split("=", 1) for x in args.label)
    halves, rows, healthy, once, once_totals = {}, [], None, {}, {}
    for f in args.once:
        d = json.loads(f.read_text())
        once_totals[f"{d['half']}, once"] = d["totals"]
        once.update({(c["half"], c["case"]): c for c in d["cases"]})
    for f in args.files:
        d = json.loads(f.read_text())
        if d.get("cases"):
            halves[d["half"]] = d["totals"]
            rows += d["cases"]
        if d.get("healthy"):
            healthy = healthy_totals(d["healthy"])
    text = summary({**once_totals, **halves}, healthy, labels) + "\n\n" + cases(rows, once)
    print(text)
    return text


if __name__ == "__main__":
    main()
