"""Per-seed outcomes of seed-replicated runs, counted from their summaries ("learned on 2/3 seeds"):
the `seeds` section of a summary, also recounted when a saved run directory is rebuilt.

Besides every seed's row, each config gets one answer across its seeds (`consensus`): how many seeds
ended with each verdict, the spread (min-max) of the deciding numbers, and the root causes and error
findings that hold on a majority of the seeds, each with the spread of its key numbers. A cause named on
one seed only is left to the per-seed detail: one seed of a run near its margin can be a coin flip.
"""

from __future__ import annotations

import math
from collections import Counter

from .summary import Summary

# Evidence keys that locate a finding or restate a rule's constant rather than measure the run: never its
# "key numbers"
_LOCATORS = {"step", "steps", "first_step", "window_steps", "batch_size", "first_step_above_threshold", "threshold",
             "clamp", "alpha", "learned_loss_bar", "far_short_loss", "learned_r1_factor", "far_short_r1_factor"}
KEY_NUMBERS = 2  # per finding: the first numeric evidence values every seed's finding has


def refresh_seed_section(summary: Summary) -> None:
    """Recount the per-seed outcomes from the runs' current verdicts (also when a report is rebuilt)."""
    groups = summary.sections.get("seeds")
    if isinstance(groups, dict) and groups:
        summary.sections["seeds"] = seed_section(summary.to_dict()["runs"],
                                                 {k: list(v["runs"]) for k, v in groups.items()}, summary.findings)


def _row(run: dict) -> dict:
    v, r = run.get("verdict") or {}, run.get("retrieval") or {}
    return {"run": run["name"], "seed": run.get("seed"), "loss_clip": (run.get("final_loss") or {}).get("loss_clip"),
            "ln_B": run.get("chance_loss"), "loss_over_lnB": v.get("loss_over_chance"), "r@1": r.get("r@1"),
            "chance@1": r.get("chance@1"), "label": v.get("label"), "learned": bool(v.get("learned")),
            "steps": run.get("steps"), "settled": (run.get("settled") or {}).get("why")}


def seed_section(runs: list[dict], groups: dict[str, list[str]], findings: list[dict] | None = None) -> dict:
    """{config name: {"runs": [...], "learned": n, "seeds": k, "agree": bool, "rows": [per-seed numbers],
    "consensus": the answer across the seeds (see `consensus`)}}."""
    by_name = {r["name"]: r for r in runs}
    out = {}
    for label, names in groups.items():
        group_runs = [by_name[n] for n in names if n in by_name]
        rows = [_row(r) for r in group_runs]
        learned = sum(r["learned"] for r in rows)
        out[label] = {"runs": names, "seeds": len(rows), "learned": learned, "agree": learned in (0, len(rows)),
                      "rows": rows, "consensus": consensus(group_runs, rows, findings or [])}
    return out


def _spread(values) -> list[float] | None:
    """[min, max] of the finite numbers (ints stay ints: counts read as counts)."""
    vals = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return [min(vals), max(vals)] if vals else None


def _number(evidence: dict, key: str):
    """evidence[key] when it is a number; for a table ({layer: {"peak": x, ...}}, layers ranked by the rule)
    the largest value of the first numeric column, named `key.column max`."""
    if "." in key:
        table, column = key.split(".", 1)
        rows = evidence.get(table)
        vals = [r.get(column.removesuffix(" max")) for r in rows.values() if isinstance(r, dict)] \
            if isinstance(rows, dict) else []
        vals = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return max(vals) if vals else None
    value = evidence.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _number_keys(evidence: dict) -> list[str]:
    keys = []
    for key, value in evidence.items():
        if key in _LOCATORS:
            continue
        if isinstance(value, dict) and value and all(isinstance(r, dict) for r in value.values()):
            first = next(iter(value.values()))
            column = next((c for c, v in first.items() if isinstance(v, float)), None)
            if column is not None:
                keys.append(f"{key}.{column} max")
        elif _number(evidence, key) is not None:
            keys.append(key)
    return keys


def _key_numbers(instances: list[dict]) -> dict[str, list[float]]:
    """The first KEY_NUMBERS numeric evidence keys present in every seed's instance -> [min, max]."""
    first = instances[0]["evidence"] if instances else {}
    out = {}
    for key in _number_keys(first):
        values = [_number(f["evidence"], key) for f in instances]
        spread = _spread(values)
        if spread is not None and len([v for v in values if v is not None]) == len(instances):
            out[key] = spread
        if len(out) == KEY_NUMBERS:
            break
    return out


def consensus(runs: list[dict], rows: list[dict], findings: list[dict]) -> dict:
    """One answer for a config across its seeds: verdict counts, the spread of the deciding numbers, and the
    causes and error findings held by a majority of the seeds (more than half), with their key numbers."""
    k = len(runs)
    majority = k // 2 + 1
    r1_factor = [r["r@1"] / r["chance@1"] for r in rows if r.get("r@1") is not None and r.get("chance@1")]
    own = {r["name"]: [f for f in findings if f.get("run") == r["name"]] for r in runs}

    def instances(fid: str) -> list[dict]:  # per seed, its first finding with that id (findings are sorted)
        return [next(f for f in own[r["name"]] if f["id"] == fid) for r in runs
                if any(f["id"] == fid for f in own[r["name"]])]

    held: dict[str, list[tuple[int, dict]]] = {}
    for r in runs:
        for i, c in enumerate(r.get("root_causes") or []):
            held.setdefault(c["cause"], []).append((i, c))
    causes = []
    for cause, hits in held.items():
        if len(hits) < majority:
            continue
        fids = list(dict.fromkeys(fid for _, c in hits for fid in c.get("findings", [])))
        causes.append({"cause": cause, "title": hits[0][1].get("title", cause), "role": hits[0][1].get("role"),
                       "seeds": len(hits), "first_on": sum(1 for i, _ in hits if i == 0),
                       "best_rank": min(i for i, _ in hits) + 1,
                       "findings": {fid: {"seeds": len(instances(fid)), "numbers": _key_numbers(instances(fid))}
                                    for fid in fids}})
    causes.sort(key=lambda c: (-c["first_on"], c["best_rank"], -c["seeds"]))
    errors = Counter(fid for r in runs for fid in {f["id"] for f in own[r["name"]] if f["severity"] == "error"})
    return {"labels": dict(Counter(r["label"] for r in rows)), "majority": majority,
            "loss_over_lnB": _spread(r["loss_over_lnB"] for r in rows), "r1_over_chance": _spread(r1_factor),
            "causes": causes,
            "errors": {fid: {"seeds": n, "numbers": _key_numbers(instances(fid))}
                       for fid, n in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0])) if n >= majority}}


def count_line(label: str, group: dict) -> str:
    k, n = group["seeds"], group["learned"]
    text = f"{label}: learned on {n}/{k} seeds"
    if not group["agree"]:
        text += " (the seeds disagree: the verdict of one seed is not to be trusted)"
    causes = (group.get("consensus") or {}).get("causes") or []
    if causes:
        text += "; causes on most seeds: " + ", ".join(f"{c['cause']} ({c['seeds']}/{k})" for c in causes[:3])
    return text
