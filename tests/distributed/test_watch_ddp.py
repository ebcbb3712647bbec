"""diagnose.watch in a user-style DDP loop on 2 gloo ranks: one alarm decision for every rank."""

from diagnose.engine.ranks import REPLICA_EVERY

from .ranks import run_ranks
from .workers import watched_ddp_loop


def test_desynchronised_replica_raises_the_same_alarm_on_both_ranks():
    steps = REPLICA_EVERY + 3
    ranks = run_ranks(watched_ddp_loop, 2, steps)
    raised = [r["raised"] for r in ranks]
    assert raised[0] is not None and raised[0]["id"] == "replicas_out_of_sync", raised
    assert raised[0] == raised[1]  # same alarm, same step, both ranks stopped there
    assert raised[0]["step"] == REPLICA_EVERY  # the first checksum after the change


def test_replicas_in_sync_raise_no_replica_alarm():
    ranks = run_ranks(watched_ddp_loop, None, REPLICA_EVERY + 2)
    for r in ranks:
        assert all(a[1] != "replicas_out_of_sync" for a in r["alarms"]), r
    assert ranks[0]["alarms"] == ranks[1]["alarms"]
    # gradients are read at observe (after the all-reduce), not in backward hooks: the same on both ranks,
    # although each rank's batch, and so its loss, differs
    assert ranks[0]["local_loss"] != ranks[1]["local_loss"]
    assert ranks[0]["grad_norms"] and ranks[0]["grad_norms"] == ranks[1]["grad_norms"]
