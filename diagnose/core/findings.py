"""Findings: what a rule saw, how bad it is, the numbers and steps behind it, and what to do next."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SEVERITIES = ("info", "warning", "error")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass
class Finding:
    id: str  # stable rule id, e.g. "loss_at_chance"
    severity: str  # info | warning | error
    run: str  # run name the evidence comes from
    message: str  # one paragraph: what was measured and what it means
    evidence: dict[str, Any]  # the numbers, with the steps they came from
    next_step: str = ""  # what to look at or change next
    target: str = ""  # layer / module / component concerned, when there is one

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} not in {SEVERITIES}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (-severity_rank(f.severity), f.run, f.id, f.target))


def sort_finding_dicts(findings: list[dict]) -> list[dict]:
    return sorted(findings, key=lambda f: (-severity_rank(f["severity"]), f["run"], f["id"], f.get("target", "")))


def finding_counts(findings: list[dict]) -> dict[str, int]:
    """{"error": n, "warning": n, "info": n} of finding dicts."""
    return {s: sum(1 for f in findings if f["severity"] == s) for s in ("error", "warning", "info")}
