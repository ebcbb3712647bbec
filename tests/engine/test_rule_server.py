"""The rule process of `diagnose.watch` (diagnose/engine/rule_server.py): same evaluation as in-process, records
shipped incrementally (whole again after thinning), no torch in the child."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from diagnose.core.rules import RunContext
from diagnose.engine.monitor import evaluate_rules
from diagnose.engine.rule_server import RuleClient, RuleProcess, shared
from probes._records import RecordBuffer

B = 32


def add_steps(buf: RecordBuffer, steps: range) -> None:
    """A loss pinned at ln B and one layer without a gradient: loss_at_chance and no_gradient."""
    for s in steps:
        buf.extend(s, "loss_split", [("loss_clip", "value", math.log(B)), ("loss_clip", "chance", math.log(B))])
        buf.extend(s, "gradient_flow", [("enc.weight", "grad_is_none", 1.0), ("proj.weight", "grad_is_none", 0.0)])
        buf.extend(s, "gradient_flow.model", [("model", "update_to_param", 0.5)])


def summary(evaluation):
    return sorted((f.id, f.target, f.severity, worth, repr(sorted(f.evidence.items()))) for f, worth in evaluation)


@pytest.fixture()
def server():
    proc = RuleProcess()
    yield RuleClient(proc)
    proc.close()


def test_child_gives_the_in_process_evaluation_step_by_step_and_after_thinning(server):
    ctx = RunContext("run", B, B, 100.0, {}, {"lr": 1e-3})
    buf = RecordBuffer(max_rows=None)
    add_steps(buf, range(10))
    first, cpu = server.submit(buf, ctx).result(timeout=60)
    assert cpu >= 0 and summary(first) == summary(evaluate_rules(buf.frame(), ctx))
    assert {f.id for f, _ in first} >= {"loss_at_chance", "no_gradient"}
    add_steps(buf, range(10, 25))  # only these rows travel
    sent_before = server._sent
    second, _ = server.submit(buf, ctx).result(timeout=60)
    assert sent_before == 10 * 5 and summary(second) == summary(evaluate_rules(buf.frame(), ctx))
    buf.dropped += 1  # the parent thinned its history: the child gets the whole buffer again
    buf._cols = {c: v[5 * 5:] for c, v in buf._cols.items()}
    buf._frame = None
    third, _ = server.submit(buf, ctx).result(timeout=60)
    assert summary(third) == summary(evaluate_rules(buf.frame(), ctx))


def test_a_rule_error_in_the_child_comes_back_as_an_error(server):
    bad_ctx = object()  # not a RunContext: the rules fail on it
    buf = RecordBuffer(max_rows=None)
    add_steps(buf, range(5))
    with pytest.raises(RuntimeError, match="rule evaluation failed in diagnose.engine.rule_server"):
        server.submit(buf, bad_ctx).result(timeout=60)
    ok, _ = server.submit(buf, RunContext("run", B, B, 100.0, {}, {})).result(timeout=60)  # still serving
    assert ok


def test_the_child_imports_the_rules_without_torch():
    code = ("import sys; import diagnose.engine.rule_server, diagnose.engine.monitor, diagnose.core.rules; "
            "print('torch' in sys.modules, 'reference_models' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_watches_of_one_process_share_one_child_with_separate_records():
    ctx = RunContext("run", B, B, 100.0, {}, {})
    a, b = RuleClient(), RuleClient()
    assert a.server is b.server is shared() and a.session != b.session
    buf_a, buf_b = RecordBuffer(max_rows=None), RecordBuffer(max_rows=None)
    add_steps(buf_a, range(10))
    buf_b.extend(0, "loss_split", [("loss_clip", "value", 0.1), ("loss_clip", "chance", math.log(B))])
    got_a, _ = a.submit(buf_a, ctx).result(timeout=60)
    got_b, _ = b.submit(buf_b, ctx).result(timeout=60)
    assert summary(got_a) == summary(evaluate_rules(buf_a.frame(), ctx))
    assert summary(got_b) == summary(evaluate_rules(buf_b.frame(), ctx))
    a.close()
    b.close()
