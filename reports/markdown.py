"""Markdown report: a pure function of the run summary (summary.json content) -> str.

No I/O: the CLI writes the string atomically. Plots are referenced by relative file name.
"""

from __future__ import annotations

import json
import math
from typing import Any

SEVERITY_ICON = {"error": "ERROR", "warning": "WARNING", "info": "info"}


def _f(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.{digits}f}" if abs(x) >= 10 ** (-digits) or x == 0 else f"{x:.2e}"
    return str(x)


def verdict_line(run: dict) -> str:
    v = run.get("verdict", {})
    clip = run.get("final_loss", {}).get("loss_clip")
    r = run.get("retrieval", {})
    parts = [f"**{run['name']}**: {v.get('label', 'n/a')}"]
    chance = run.get("chance_loss")
    if clip is not None and chance:
        parts.append(f"CLIP loss {_f(clip)} vs ln(B) = {_f(chance)} ({_f(clip / chance, 2)} x chance)"
                     + (f", B from {run['batch_size_from']}" if run.get("batch_size_from") else ""))
    elif clip is not None:  # no batch size given: no chance level to read the loss against
        parts.append(f"CLIP loss {_f(clip)} (no batch size given: ln(B) unknown)")
    if "r@1" in r:
        ratio = r["r@1"] / r["chance@1"] if r.get("chance@1") else float("nan")
        parts.append(f"held-out R@1 {_f(r['r@1'])} vs chance {_f(r['chance@1'])} ({_f(ratio, 1)}x)")
    if "image_mean_cosine" in r:
        parts.append(f"image-embedding mean cosine {_f(r['image_mean_cosine'], 3)}")
    return " — ".join(parts[:1]) + ": " + "; ".join(parts[1:]) if len(parts) > 1 else parts[0]


def finding_counts(findings: list[dict]) -> dict[str, int]:
    """{"error": n, "warning": n, "info": n}: the one place findings are counted."""
    return {s: sum(1 for f in findings if f["severity"] == s) for s in ("error", "warning", "info")}


def counts_line(findings: list[dict]) -> str:
    c = finding_counts(findings)
    return f"Findings: {c['error']} error, {c['warning']} warning, {c['info']} info."


TIER_WORDS = {1: "a mechanism", 2: "a likely cause", 3: "a contributing condition", 4: "a symptom", 5: "nothing named"}


def _first_sentence(text: str, limit: int = 320) -> str:
    cut = text.find(": ") if len(text) > limit else -1
    return text if cut < 0 or len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def root_cause_lines(run: dict, findings: list[dict] | None = None, markdown: bool = True) -> list[str]:
    """A run's ranked root causes, each with the findings that support it and their numbers."""
    causes = run.get("root_causes") or []
    label = run.get("verdict", {}).get("label") if run.get("verdict") else None
    head = f"{run['name']}{': ' + label if label else ''}"
    b = "**" if markdown else ""
    lines = [f"### {head}" if markdown else head, ""] if markdown else [head]
    failed = run.get("rule_failures")
    if failed:  # a bug of ours, said where the causes are read: their findings are missing below
        lines.append(f"- {b}rules that failed on these records{b} (a bug in diagnose; their findings are missing): "
                     + "; ".join(failed))
    if not causes:
        learned = " (the run learned)" if run.get("verdict", {}).get("learned") else ""
        lines.append("- no root cause implicated by any finding" + learned)
        return lines + ([""] if markdown else [])
    own = {f["id"]: f for f in (findings or []) if f.get("run") == run["name"]}
    for i, c in enumerate(causes, 1):
        title = c.get("title", c["cause"])
        lines.append(f"{i}. {b}{c['cause']}{b}: {title} ({TIER_WORDS.get(c['tier'], c['tier'])}, {c['severity']})"
                     + (f"; test: {c['fix']}" if c.get("fix") else ""))
        for fid in c.get("findings", []):
            f = own.get(fid)
            text = f" — {_first_sentence(f['message'])}" if f else ""
            lines.append(f"   - `{fid}`{text}" if markdown else f"   - {fid}{text}")
    return lines + ([""] if markdown else [])


def root_causes_section(summary: dict) -> list[str]:
    runs = summary.get("runs", [])
    if not any("root_causes" in r for r in runs):
        return []
    lines = ["## Root causes", "", "Ranked per run from its findings (mechanism > likely cause > contributing "
             "condition > symptom, then severity); each with the findings that support it.", ""]
    for r in runs:
        lines += root_cause_lines(r, summary.get("findings", []))
    return lines


def _evidence(ev: dict) -> str:
    return "`" + json.dumps(ev, separators=(", ", ": "), default=str) + "`"


def findings_section(findings: list[dict]) -> list[str]:
    lines = ["## Findings", ""]
    if not findings:
        return lines + ["No rule fired.", ""]
    lines += ["| severity | run | finding | target |", "|---|---|---|---|"]
    for f in findings:
        lines.append(f"| {SEVERITY_ICON[f['severity']]} | {f['run']} | `{f['id']}` | {f.get('target') or ''} |")
    lines.append("")
    for f in findings:
        lines.append(f"### {SEVERITY_ICON[f['severity']]} `{f['id']}` — "
                     f"{f['run']}{' · ' + f['target'] if f.get('target') else ''}")
        lines.append("")
        lines.append(f["message"])
        lines.append("")
        lines.append(f"- evidence: {_evidence(f['evidence'])}")
        if f.get("next_step"):
            lines.append(f"- next step: {f['next_step']}")
        lines.append("")
    return lines


def _range(pair: list | None, digits: int = 3, unit: str = "") -> str:
    if not pair:
        return "n/a"
    lo, hi = pair
    return f"{_f(lo, digits)}{unit}" if _f(lo, digits) == _f(hi, digits) else f"{_f(lo, digits)}-{_f(hi, digits)}{unit}"


def _numbers(entry: dict) -> str:
    nums = entry.get("numbers") or {}
    return f" ({', '.join(f'{k} {_range(v)}' for k, v in nums.items())})" if nums else ""


def seeds_answer_section(seeds: dict | None) -> list[str]:
    """One answer per config across its seeds: verdict counts, the spread of the deciding numbers, the causes
    and error findings that hold on a majority of the seeds (diagnose.core.seed_counts.consensus)."""
    if not seeds or not all(g.get("consensus") for g in seeds.values()):
        return []
    lines = ["## Answer across seeds", ""]
    for label, g in seeds.items():
        c, k = g["consensus"], g["seeds"]
        labels = ", ".join(f"{name} on {n}" for name, n in sorted(c["labels"].items(), key=lambda kv: -kv[1]))
        labels = f" ({labels})" if g["learned"] < k else ""
        lines.append(f"- **{label}: learned on {g['learned']}/{k} seeds**{labels}: CLIP loss "
                     f"{_range(c['loss_over_lnB'])} x ln(B), held-out R@1 {_range(c['r1_over_chance'], 1, 'x')} "
                     "chance" + ("" if g["agree"] else "; **the seeds disagree**: a single-seed verdict is not to be "
                                 "trusted here") + ".")
        if c["causes"]:
            lines.append(f"  - root causes on the majority of seeds ({c['majority']} or more of {k}):")
            for i, cause in enumerate(c["causes"], 1):
                support = "; ".join(f"`{fid}` on {e['seeds']}/{k}{_numbers(e)}" for fid, e in cause["findings"].items())
                lines.append(f"    {i}. **{cause['cause']}** ({cause['seeds']}/{k} seeds, first on "
                             f"{cause['first_on']}): {cause['title']}" + (f" — {support}" if support else ""))
        elif not g["learned"]:
            lines.append(f"  - no root cause holds on the majority of seeds ({c['majority']} of {k}); see each seed "
                         "below.")
        if c["errors"]:
            lines.append("  - error findings on the majority of seeds: "
                         + "; ".join(f"`{fid}` {e['seeds']}/{k}{_numbers(e)}" for fid, e in c["errors"].items()))
    return lines + [""]


def seeds_section(seeds: dict | None) -> list[str]:
    """Per config: every seed's loss against ln(B), R@1 and verdict, and how many seeds learned."""
    if not seeds:
        return []
    lines = ["## Across seeds", ""]
    for label, g in seeds.items():
        agree = "" if g["agree"] else " — **the seeds disagree**: a single-seed verdict is not to be trusted here"
        lines += [f"**{label}**: learned on {g['learned']}/{g['seeds']} seeds{agree}.", "",
                  "| seed | steps | CLIP loss | ln(B) | loss / ln(B) | R@1 | chance R@1 | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in g["rows"]:
            steps = f"{r.get('steps')} (settled)" if r.get("settled") else str(r.get("steps"))
            lines.append(f"| {r['seed']} | {steps} | {_f(r['loss_clip'])} | {_f(r['ln_B'])} | "
                         f"{_f(r['loss_over_lnB'], 3)} | "
                         f"{_f(r['r@1'])} | {_f(r['chance@1'])} | {r['label']} |")
        why = sorted({r["settled"] for r in g["rows"] if r.get("settled")})
        if why:
            lines.append("")
            lines.append("Settled replicas stopped early (the first seed always runs its full length): "
                         + "; ".join(why) + ".")
        lines.append("")
    return lines


def hypotheses_section(hypotheses: list[dict]) -> list[str]:
    if not hypotheses:
        return []
    lines = ["## Hypotheses", "", "| hypothesis | claim | verdict | deciding numbers |", "|---|---|---|---|"]
    for h in hypotheses:
        lines.append(f"| `{h['id']}` | {h['claim']} | **{h['verdict']}** | {h.get('summary', '')} |")
    lines.append("")
    return lines


def answer_section(summary: dict) -> list[str]:
    """The ablation's answer: what is wrong, which change fixes it, how sure."""
    ab, hyps, runs = summary["ablation"], summary.get("hypotheses", []), summary["runs"]
    base = runs[0]
    lines = ["## Answer", "", f"- {verdict_line(base).replace('**baseline**', '**Baseline**', 1)}."]
    confirmed = [h for h in hyps if h["verdict"] == "confirmed"]
    if ab.get("baseline_learned"):
        lines.append("- The baseline learns at this scale and step count: there is no failure to explain here; "
                     "verdicts are inconclusive.")
    for h in confirmed:
        fx = h["evidence"].get("fix") or {}
        on = (f" (confirmed on {h['seeds']['counts']['confirmed']}/{len(h['seeds']['per_seed'])} seeds; numbers of "
              "the first)" if h.get("seeds") else "")
        lines.append(f"- **Fixes it: `{h['id']}`**{on} — {h['fix_text']}: CLIP loss {_f(fx.get('loss_clip'))} vs ln(B) "
                     f"{_f(fx.get('ln_B'))}, R@1 {_f(fx.get('r@1'))} vs chance {_f(fx.get('chance@1'))}; mechanism "
                     f"{h['mechanism']}.")
    split = [f"`{h['id']}` ({h['seeds'].get('tally', '')})" for h in hyps if h.get("seeds") and not h["seeds"]["agree"]]
    if split:
        lines.append(f"- **Seeds disagree** on {', '.join(split)}: a verdict needs a majority of the seeds.")
    search = ab.get("minimal_set_search", {})
    if search.get("needed"):
        outcome = "restores learning" if search.get("learned") else "does not restore learning"
        lines.append(f"- No single fix restores learning; the greedy search's set {search.get('set')} {outcome} "
                     f"({search.get('runs')} extra runs).")
    if not confirmed and not search.get("needed") and not ab.get("baseline_learned"):
        lines.append("- No tested fix restores learning.")
    for label in ("refuted", "inconclusive", "failed"):
        ids = [f"`{h['id']}`" for h in hyps if h["verdict"] == label]
        if ids:
            lines.append(f"- {label.capitalize()}: {', '.join(ids)}.")
    for name, error in (ab.get("failed_runs") or {}).items():
        lines.append(f"- **Incomplete: run `{name}` failed** — {error}. Its verdicts are not decided; rerun the "
                     "ablation.")
    lines.append("- How sure: each verdict compares a run with only that change against the baseline, same data and "
                 "seed, "
                 f"{ab['steps']} steps at scale `{ab['scale']}`; learned means final CLIP loss < "
                 f"{base['verdict']['margins']['loss_fraction_of_lnB']} x ln(B) and held-out R@1 >= "
                 f"{base['verdict']['margins']['r1_factor_over_chance']:g} x chance. "
                 f"{_seeds_sentence(ab.get('seeds') or [])} "
                 f"{ab['runs_executed']} runs in all.")
    lines.append("")
    return lines


def _seeds_sentence(seeds: list) -> str:
    if len(seeds) <= 1:
        return "One seed: `--seeds 3` repeats every run over 3 seeds and confirms a fix only on a majority."
    return (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), every run repeated on each: confirmed or refuted only "
            "when a majority of the seeds say so.")


def hypothesis_details(hyps: list[dict]) -> list[str]:
    lines = []
    for h in hyps:
        lines += [f"### `{h['id']}` — **{h['verdict']}**", "", f"Claim ({h['source']}): {h['claim']}", "",
                  "- test: "
                  f"{h['fix_text']}{' (`' + ' '.join('--set ' + s for s in h['fix']) + '`)' if h['fix'] else ''}",
                  f"- mechanism claimed: {h['mechanism_claimed']} — measured: {h['mechanism']}",
                  f"- {h['summary']}", f"- evidence: {_evidence(h['evidence'])}", ""]
    return lines


def coverage_section(coverage: dict | None) -> list[str]:
    """What the probes observed and what they could not (modules under no_grad, frozen parameters, ...)."""
    if not coverage:
        return []
    lines = ["## Coverage", "", "What the probes saw of the model, and what they did not:", ""]
    for key, value in coverage.items():
        if isinstance(value, dict):
            shown = ", ".join(f"{k}: {v}" for k, v in list(value.items())[:12]) + (" ..." if len(value) > 12 else "")
        elif isinstance(value, (list, tuple)):
            shown = ", ".join(map(str, value[:12])) + (f" ... ({len(value)} in all)" if len(value) > 12 else "")
        else:
            shown = str(value)
        lines.append(f"- {key.replace('_', ' ')}: {shown or 'none'}")
    return lines + [""]


def runs_table(runs: list[dict]) -> list[str]:
    lines = ["## Runs", "",
             "| run | config | scale | steps | batch | ln(B) | final losses | R@1 / R@5 / R@10 | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        losses = ", ".join(f"{k} {_f(v)}" for k, v in r.get("final_loss", {}).items())
        rr = r.get("retrieval", {})
        rec = " / ".join(_f(rr.get(f"r@{k}")) for k in (1, 5, 10))
        lines.append(f"| {r['name']} | {r.get('config') or '-'} | {r.get('scale') or '-'} | {r['steps']} | "
                     f"{r['batch_size']} | "
                     f"{_f(r['chance_loss'])} | {losses} | {rec} | {_f(r.get('seconds'), 1)} |")
    window = runs[0].get("final_window_steps") or ["?", "?"]
    lines += ["", "Final losses are means over the last steps "
              f"(window {window[0]}-{window[1]} for the first run); "
              "R@K is the mean of image→text and text→image on the held-out split; chance R@K = K/N.", ""]
    return lines


def _scale_flag(run: dict) -> str:
    return " --scale " + run["scale"] if run.get("scale") not in (None, "small") else ""


def _next_lines(runs: list[dict]) -> list[str]:
    """The one "Next" line: an ablation per config that did not learn on some seed, each command once."""
    failed = [r for r in runs if not r.get("verdict", {}).get("learned", True) and r.get("config")]
    commands = list(dict.fromkeys(f"`diagnose ablate --config {r.get('config_source') or r['config']}{_scale_flag(r)}`"
                                  for r in failed))
    if not commands:
        return []
    return ["Next: test the candidate causes one at a time with " + ", ".join(commands)
            + " (baseline, each fix alone, all fixes; verdicts with the numbers that decide them).", ""]


def _default_title(runs: list[dict], seeds: dict | None) -> str:
    """The runs compared; seed replicas as one entry per config ("A vs B (3 seeds each)")."""
    if not seeds:
        return " vs ".join(r["name"] for r in runs)
    grouped = {n for g in seeds.values() for n in g.get("runs", [])}
    names = list(seeds) + [r["name"] for r in runs if r["name"] not in grouped]
    counts = sorted({g["seeds"] for g in seeds.values()})
    each = f"{counts[0]} seeds each" if len(counts) == 1 else "seeds: " + ", ".join(
        f"{label} {g['seeds']}" for label, g in seeds.items())
    return f"{' vs '.join(names)} ({each})"


def render(summary: dict, plots: list[tuple[str, str]], title: str | None = None, plots_note: str | None = None) -> str:
    """`plots` is [(file name relative to the report, caption)]; `plots_note` says why there are none (yet)."""
    runs, findings = summary.get("runs", []), summary.get("findings", [])
    seeds = summary.get("seeds") if not summary.get("ablation") else None
    title = title or "Diagnosis: " + _default_title(runs, seeds)
    lines = [f"# {title}", ""]
    if summary.get("script_ablation"):  # diagnose ablate -- python train.py
        from .script_ablation import answer

        lines += answer(summary)
    if summary.get("ablation"):
        lines += answer_section(summary)
        if plots and plots[0][0].startswith("runs_vs_chance"):
            lines += [f"![{plots[0][1]}]({plots[0][0]})", ""]
    lines += seeds_answer_section(seeds)
    if seeds:
        lines += _next_lines(runs) + ["Per seed below: every run's verdict, root causes and findings.", ""]
    lines += ["## Verdict", ""]
    for r in runs:
        lines.append(f"- {verdict_line(r)}")
    lines.append("")
    lines += seeds_section(summary.get("seeds"))
    if not summary.get("ablation"):
        lines += root_causes_section(summary)
    lines += [counts_line(findings), ""]
    if not summary.get("ablation") and not seeds:
        lines += _next_lines(runs)
    if summary.get("ablation_report"):
        report = summary["ablation_report"]
        lines += [f"Ablation verdicts for these configs: [{report}]({report})", ""]
    lines += hypotheses_section(summary.get("hypotheses", []))
    if summary.get("ablation"):
        lines += hypothesis_details(summary.get("hypotheses", []))
    lines += findings_section(findings)
    if plots:
        lines += ["## Plots", ""]
        for file, caption in plots:
            lines += [f"### {caption}", "", f"![{caption}]({file})", ""]
    elif plots_note:
        lines += ["## Plots", "", plots_note, ""]
    lines += coverage_section(summary.get("coverage"))
    lines += runs_table(runs)
    env = summary.get("environment")
    if env:
        lines += [f"Environment: {', '.join(f'{k} {v}' for k, v in env.items())}.", ""]
    if summary.get("command"):
        lines += ["## Reproduce", "", "```bash", summary["command"], "```", ""]
    return "\n".join(lines)
