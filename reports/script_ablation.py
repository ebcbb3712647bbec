"""The answer section of `diagnose ablate -- python train.py`: which fix works in the user's own script."""

from __future__ import annotations

import math


def _f(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else str(x)


def _g(x) -> str:
    return "-" if x is None else f"{x:.2g}"


def answer(summary: dict) -> list[str]:
    ab, hyps = summary["script_ablation"], summary.get("hypotheses", [])
    learned = ab.get("baseline_learned", [])
    lines = ["## Answer", "", f"Script: `{ab['command']}`; {ab['seeds']} seed(s), "
             f"{'capped at ' + str(ab['steps']) + ' observed steps' if ab.get('steps') else 'its own length'}; "
             f"baseline learned on {sum(learned)}/{len(learned)} seeds.", ""]
    for label in ("confirmed", "inconclusive", "refuted", "not applicable", "failed"):
        for h in (h for h in hyps if h["verdict"] == label):
            tests = f" (tests {h['claim']})" if h["claim"] != "(variant)" else ""
            lines.append(f"- **{label}: `{h['id']}`**{tests} — {h['fix_text']}. {h['summary']}")
    if not hyps:
        lines.append("- No candidate fix: the baseline's causes have no intervention and none was named "
                     "(`--fix NAME`, `--variant NAME=ARGS`; `--list-fixes`).")
    for name, error in (ab.get("failed_runs") or {}).items():
        lines.append(f"- Run `{name}` failed: {error}")
    lines += ["", "| fix | seed | verdict | loss/ln(B) baseline → fix | R@1 baseline → fix | end cosine baseline → fix "
              "| peak update ratio baseline → fix | what it did |", "|---|---|---|---|---|---|---|---|"]
    for h in hyps:
        for d in h["per_seed"]:
            b, x = d.get("baseline") or {}, d.get("fix") or {}
            lines.append(f"| `{h['id']}` | {d['seed']} | {d['verdict']} | {_f(b.get('loss_over_lnB'))} → "
                         f"{_f(x.get('loss_over_lnB'))} | {_f(b.get('r@1'))} → {_f(x.get('r@1'))} | "
                         f"{_f(b.get('cosine_end'))} → {_f(x.get('cosine_end'))} | "
                         f"{_g(b.get('update_peak'))} → {_g(x.get('update_peak'))} | "
                         f"{'; '.join(d.get('applied') or []) or d.get('why', '')} |")
    lines += ["", "Confirmed: the fix makes a failed run learn, or lowers loss/ln(B) by >= 0.05 on a run that "
              "learns; refuted: no such change; a verdict needs a strict majority of the seeds. End cosine: the "
              "end-of-run mean cosine of the most alike embedding (collapse near 1); peak update ratio: the largest "
              "per-layer update/weight of any step. Each run's own directory is under `runs/`.", ""]
    return lines
