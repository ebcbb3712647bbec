"""The rule catalogue as a markdown page (docs/rules.md), generated from the declarations so the page
cannot drift from the code: `python -m diagnose.core.rules.reference > docs/rules.md`
(tests/core/rules/test_reference.py checks that the checked-in page is current)."""

from __future__ import annotations

import inspect

from .base import Rule
from .catalogue import CATALOGUE
from .causes import CAUSES
from .ranking import ROLES

KINDS = {"records": "instrumented runs (`diagnose.watch`, the reference runs, framework callbacks)",
         "checkpoint": "`diagnose checkpoint`", "logs": "`diagnose logs` (one run of a log)",
         "log_set": "`diagnose logs` (every run of a log at once)",
         "verdict": "a run's verdict (end-of-run loss, held-out retrieval)"}


def _doc(rule: Rule) -> str:
    return " ".join((inspect.getdoc(type(rule)) or "").split())


def _emits(rule: Rule) -> str:
    out = []
    for e in rule.emits:
        cause = f"`{e.cause}` (tier {e.tier}, {ROLES[e.tier]})" if e.cause else "no cause"
        cause += "".join(f", explains `{c}`" for c in e.explains)
        out.append(f"`{e.id}` ({'/'.join(e.severities)}) → {cause}")
    return "<br>".join(out)


def _thresholds(rule: Rule) -> str:
    return ", ".join(f"`{k}` = {v:g}" for k, v in rule.thresholds.items()) or "-"


def render() -> str:
    """The whole page."""
    lines = ["# Rule catalogue", "",
             "Generated from `diagnose/core/rules` by `python -m diagnose.core.rules.reference`; do not edit by hand.",
             "Each finding id implicates at most one root cause with a tier: 1 a mechanism read directly in the run,",
             "2 a cause named through a measurement another cause could also produce, 3 a contributing condition",
             "(healthy runs share it: never ranked first), 4 a symptom. Thresholds are defined, with their origin,",
             "in the rule's module.", ""]
    for kind, rules in CATALOGUE.items():
        lines += [f"## {KINDS.get(kind, kind)}", "", "| rule | topic | what it checks | findings | thresholds |",
                  "|---|---|---|---|---|"]
        for rule in rules:
            cells = (f"`{rule.name}`", rule.topic or "-", _doc(rule), _emits(rule), _thresholds(rule))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Root causes", "", "| cause | what is wrong | the change that tests it |", "|---|---|---|"]
    lines += [f"| `{c.id}` | {c.title} | {c.fix} |" for c in CAUSES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
