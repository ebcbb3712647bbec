"""The rule catalogue evaluated online: records arrive step by step, rules run on a schedule on the
records so far, and each finding is stamped with the first step at which it held.

Evaluating at step t is `run_rules(records up to t, ctx)`: exactly what the offline evaluation of the
run truncated at t gives (tests/engine/test_monitor.py checks it). Whether a finding that
holds at t is worth an *alarm* is asked of the rule that emitted it (`Rule.alarm`): some states are
normal at initialisation (a loss at ln B, inputs that already look alike) and alarm only once the run
has shown it does not leave them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..core.findings import Finding, sort_findings
from ..core.records import COLUMNS, empty_records
from ..core.rules import CATALOGUE, RunContext


@dataclass
class Alarm:
    step: int  # the step at which the finding first qualified as an alarm (the records went up to it)
    finding: Finding
    # the step whose `observe` delivered it: later than `step` when the rules ran in the background
    delivered_at: int | None = None


@dataclass
class RuleMonitor:
    ctx: RunContext
    _chunks: list[pd.DataFrame] = field(default_factory=list)
    _frame: pd.DataFrame | None = None
    findings: list[Finding] = field(default_factory=list)
    first_seen: dict[tuple[str, str], int] = field(default_factory=dict)
    alarms: list[Alarm] = field(default_factory=list)
    last_step: int | None = None

    def add(self, records: pd.DataFrame) -> None:
        """Append new records (step, probe, target, metric, value)."""
        if len(records):
            self._chunks.append(records[list(COLUMNS)])
            self._frame = None

    def replace(self, records: pd.DataFrame) -> None:
        """Use these records as the whole history (e.g. a bounded, thinned view kept by the probes)."""
        self._chunks, self._frame = [records[list(COLUMNS)]], None

    @property
    def records(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = pd.concat(self._chunks, ignore_index=True) if self._chunks else empty_records()
            self._chunks = [self._frame]
        return self._frame

    def evaluate(self, step: int | None = None) -> list[Alarm]:
        """Run every record rule on the records so far; returns the alarms that are new at this step."""
        df = self.records
        if step is None:
            step = int(df["step"].max()) if len(df) else 0
        return self.apply(step, evaluate_rules(df, self.ctx))

    def apply(self, step: int, evaluation: Evaluation) -> list[Alarm]:
        """Book an evaluation of the records up to `step`: findings so far, first-seen steps, new alarms."""
        self.last_step = step
        self.findings = sort_findings([f for f, _ in evaluation])
        new = []
        alarmed = {(a.finding.id, a.finding.target) for a in self.alarms}
        for f, worth_alarm in evaluation:
            key = (f.id, f.target)
            self.first_seen.setdefault(key, step)
            if f.severity == "error" and key not in alarmed and worth_alarm:
                alarmed.add(key)
                alarm = Alarm(step, f)
                self.alarms.append(alarm)
                new.append(alarm)
        return new


# one evaluation: every finding with whether its rule deems it worth an alarm (`Rule.alarm`)
Evaluation = list[tuple[Finding, bool]]


def evaluate_rules(df: pd.DataFrame, ctx: RunContext) -> Evaluation:
    """Every record rule on `df`: reads `df` only, so it may run in another thread on a frame that the
    training thread no longer changes (record frames are replaced, never changed in place)."""
    out: Evaluation = []
    for rule in CATALOGUE["records"]:
        for f in rule(df, ctx):
            out.append((f, f.severity == "error" and rule.alarm(f, df)))
    return out
