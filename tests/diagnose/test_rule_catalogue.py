"""The rule catalogue: declarations are complete and consistent, root-cause ranking reads them, and a
rule evaluated online on records up to step t gives what the offline evaluation of the run truncated
at t gives."""

from __future__ import annotations

import inspect
import math

import pandas as pd
import pytest

from diagnose import rules as R
from diagnose.monitor import RuleMonitor
from diagnose.rules import rank_root_causes
from diagnose.rules.causes import BY_ID
from diagnose.runs import resolve_config, run_instrumented


def test_every_rule_is_declared_and_registered_once():
    seen = [rule for rules in R.CATALOGUE.values() for rule in rules]
    assert len({type(r) for r in seen}) == len(seen)
    declared = R.declarations()
    for rule in seen:
        assert rule.topic and rule.emits, rule.name
        module = inspect.getmodule(type(rule))
        for name, value in rule.thresholds.items():  # thresholds are the module's named constants
            assert getattr(module, name, None) == value or getattr(R, name, None) == value, (rule.name, name)
        for e in rule.emits:
            assert declared[e.id].cause == e.cause
            assert e.cause is None or e.cause in BY_ID, e


def test_undeclared_finding_is_refused():
    class Rogue(R.Rule):
        emits = (R.Emit("x", ("warning",)),)

        def check(self, df, ctx):
            return [R.Finding("y", "warning", ctx.name, "m", {})]

    with pytest.raises(AssertionError):
        Rogue()(pd.DataFrame(), R.RunContext("r"))


def test_root_causes_come_from_the_declarations():
    declared = R.declarations()
    for fid, e in declared.items():
        if e.cause is None:
            continue
        for sev in e.severities:
            got = rank_root_causes([{"id": fid, "severity": sev}], {"learned": False})
            if sev in e.implicates_at:
                assert got[0]["cause"] == e.cause and got[0]["tier"] == e.tier, (fid, sev)
            else:
                assert got[0]["cause"] == "unexplained", (fid, sev)


@pytest.fixture(scope="module")
def perceiver_records():
    cfg = resolve_config("perceiver", ["dataset.num_train=256", "dataset.num_val=64"], "tiny", 0)
    run, records = run_instrumented(cfg, 24, "cpu", expensive_every=4)
    return run, records


def _key(findings):
    return [(f.id, f.severity, f.target, repr(sorted(f.evidence.items()))) for f in findings]


@pytest.mark.parametrize("t", [0, 3, 7, 12, 23])
def test_online_equals_offline_on_truncated_records(perceiver_records, t):
    run, records = perceiver_records
    ctx = run.summary().context()
    monitor = RuleMonitor(ctx)
    for step, chunk in records[records["step"] <= t].groupby("step"):
        monitor.add(chunk)
        monitor.evaluate(int(step))
    offline = R.run_rules(records[records["step"] <= t].reset_index(drop=True), ctx)
    assert _key(monitor.findings) == _key(offline)
    assert monitor.last_step == t


def test_context_knows_nothing_measured_in_the_run(perceiver_records):
    run, _ = perceiver_records
    ctx = run.summary().context()
    fields = set(vars(ctx))
    assert fields == {"name", "batch_size", "candidates", "max_logit_scale", "weights", "optimizer"}
    assert not any(isinstance(v, float) and math.isnan(v) for v in vars(ctx).values())
