"""Per-seed outcomes of seed-replicated runs, counted from their summaries ("learned on 2/3 seeds"):
the `seeds` section of a summary, also recounted when a saved run directory is rebuilt."""

from __future__ import annotations

from .summary import Summary


def refresh_seed_section(summary: Summary) -> None:
    """Recount the per-seed outcomes from the runs' current verdicts (also when a report is rebuilt)."""
    groups = summary.sections.get("seeds")
    if isinstance(groups, dict) and groups:
        summary.sections["seeds"] = seed_section(summary.to_dict()["runs"],
                                                 {k: list(v["runs"]) for k, v in groups.items()})


def _row(run: dict) -> dict:
    v, r = run.get("verdict") or {}, run.get("retrieval") or {}
    return {"run": run["name"], "seed": run.get("seed"), "loss_clip": (run.get("final_loss") or {}).get("loss_clip"),
            "ln_B": run.get("chance_loss"), "loss_over_lnB": v.get("loss_over_chance"), "r@1": r.get("r@1"),
            "chance@1": r.get("chance@1"), "label": v.get("label"), "learned": bool(v.get("learned")),
            "steps": run.get("steps"), "settled": (run.get("settled") or {}).get("why")}


def seed_section(runs: list[dict], groups: dict[str, list[str]]) -> dict:
    """{config name: {"runs": [...], "learned": n, "seeds": k, "agree": bool, "rows": [per-seed numbers]}}."""
    by_name = {r["name"]: r for r in runs}
    out = {}
    for label, names in groups.items():
        rows = [_row(by_name[n]) for n in names if n in by_name]
        learned = sum(r["learned"] for r in rows)
        out[label] = {"runs": names, "seeds": len(rows), "learned": learned, "agree": learned in (0, len(rows)),
                      "rows": rows}
    return out


def count_line(label: str, group: dict) -> str:
    k, n = group["seeds"], group["learned"]
    text = f"{label}: learned on {n}/{k} seeds"
    if not group["agree"]:
        text += " (the seeds disagree: the verdict of one seed is not to be trusted)"
    return text
