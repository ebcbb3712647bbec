"""The online rule monitor (`diagnose.engine.monitor`): a rule evaluated online on records up to step t
gives what the offline evaluation of the run truncated at t gives; the context knows nothing measured
in the run."""

from __future__ import annotations

import math

import pytest

from diagnose.core import rules as R
from diagnose.engine.monitor import RuleMonitor
from diagnose.lab.runs import resolve_config, run_instrumented


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
