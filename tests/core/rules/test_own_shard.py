"""Rule gathered_own_shard_only: gathered features of which only this rank's shard is differentiable, under SGD."""

from __future__ import annotations

from diagnose.core import rules as R
from diagnose.core.rules.base import RunContext

from .harness import LN_B, N, ctx, frame, ids, loss, one, rec

GATHERED = RunContext("run", 8, 64)  # 8 rows per rank, 64 candidates


def _gathered(k=8, with_grad=1, rows=64, n=N):
    return frame(rec("contrastive", "image", "gather_shards", [k] * n),
                 rec("contrastive", "image", "gather_shards_with_grad", [with_grad] * n),
                 rec("contrastive", "logits", "rows", [rows] * n))


def test_own_shard_only_under_sgd_is_an_error_at_the_end_never_an_alarm():
    df = frame(_gathered(), loss("loss_clip", [1.05 * LN_B] * N, chance=LN_B))
    f = one(R.gathered_own_shard_only(df, GATHERED), "gathered_own_shard_only")
    assert f.severity == "error" and f.evidence["shards"] == 8 and f.evidence["readings"] == N
    assert "1/8 of the global loss's gradient" in f.message and "world size (8)" in f.next_step
    assert R.gathered_own_shard_only.alarm(f, df) is False  # the fixed script (loss x W) reads the same
    ranked = R.rank_root_causes([f.to_dict()], {"learned": False})
    assert ranked[0]["cause"] == "distributed_gradient_scale"


def test_near_misses_adam_a_differentiable_gather_a_local_loss_learned_and_no_gather():
    c = GATHERED
    lossy = loss("loss_clip", [LN_B] * N)
    adam = rec("optimizer", "group0", "eps", [1e-8] * N)
    for df, context in ((frame(_gathered(), lossy, adam), c),  # Adam divides the scale out
                        (frame(_gathered(with_grad=8), lossy), c),  # torch.distributed.nn.all_gather
                        (frame(_gathered(rows=8), lossy), c),  # a local loss: 8 x 64 logits (another rule's)
                        (frame(_gathered(), loss("loss_clip", [0.2 * LN_B] * N)), c),  # learned
                        (frame(_gathered(k=2), lossy), c),  # shards that are not candidates / batch
                        (frame(_gathered(), lossy), ctx(64))):  # no gather in the description
        assert "gathered_own_shard_only" not in ids(R.gathered_own_shard_only(df, context))
