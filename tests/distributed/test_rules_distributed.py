"""The distributed rules on hand-made records (no processes): each fires on its condition only."""

import math

import pandas as pd

from diagnose.core.rules import RunContext, run_rules
from diagnose.core.rules.distributed import ChanceMismatch, GatheredGradientScale, ReplicasOutOfSync


def _frame(rows):
    return pd.DataFrame([{"step": s, "probe": "loss_split", "target": t, "metric": m, "value": float(v)}
                         for s, t, m, v in rows])


def _grad(scale, cosine):
    return _frame([(s, "extras", m, v) for s in (0, 10, 20) for m, v in
                   (("dist_grad_scale", scale), ("dist_grad_cosine", cosine), ("world_size", 2))])


def test_gradient_scale_and_direction():
    ctx = RunContext("r", batch_size=8, candidates=16)
    assert GatheredGradientScale()(_grad(1.0, 1.0), ctx) == []
    [half] = GatheredGradientScale()(_grad(0.5, 1.0), ctx)
    assert (half.id, half.severity) == ("gathered_gradient_scale", "warning") and "0.5 times" in half.message
    [wrong] = GatheredGradientScale()(_grad(0.7, 0.8), ctx)
    assert (wrong.id, wrong.severity) == ("gathered_gradient_direction", "error")


def test_replicas_out_of_sync_from_the_first_differing_checksum():
    ok = _frame([(s, "extras", "replica_param_spread", 0.0) for s in (0, 10, 20)])
    assert ReplicasOutOfSync()(ok, RunContext("r")) == []
    bad = _frame([(0, "extras", "replica_param_spread", 0.0), (10, "extras", "replica_param_spread", 3e-4),
                  (20, "extras", "replica_param_spread", float("nan"))])
    [f] = ReplicasOutOfSync()(bad, RunContext("r"))
    assert f.id == "replicas_out_of_sync" and f.evidence["first_step"] == 10


def _flat_loss(value, chance, world=None):
    rows = [(s, "loss_clip", "value", value) for s in range(40)] + [(s, "loss_clip", "chance",
                                                                     chance) for s in range(40)]
    rows += [(s, "extras", "world_size", world) for s in range(40)] if world else []
    return _frame(rows)


def test_loss_at_ln_2b_described_with_batch_b_is_a_mismatch():
    records = _flat_loss(4.8532, math.log(64), world=2)  # the seed's 4.85 with a configured batch of 64
    [f] = ChanceMismatch()(records, RunContext("r", batch_size=64))
    assert f.id == "batch_candidates_mismatch" and f.evidence["implied_candidates"] == 128
    assert "gathered across the 2 ranks" in f.message
    # described with the real candidate count: at chance, no mismatch (loss_at_chance says ln(128))
    fine = _flat_loss(4.8532, math.log(128), world=2)
    assert ChanceMismatch()(fine, RunContext("r", batch_size=64, candidates=128)) == []
    ids = {x.id for x in run_rules(fine, RunContext("r", batch_size=64, candidates=128))}
    assert "loss_at_chance" in ids and "batch_candidates_mismatch" not in ids
    # a loss that learned below chance is no mismatch
    assert ChanceMismatch()(_flat_loss(1.2, math.log(64)), RunContext("r", batch_size=64)) == []


def _with_logits(records, cols, loss_diagonal=None):
    rows = [(s, "logits", "cols", cols) for s in range(40)]
    rows += [(s, "logits", "loss_diagonal", loss_diagonal) for s in range(40)] if loss_diagonal is not None else []
    extra = _frame(rows).assign(probe="contrastive")
    return pd.concat([records, extra], ignore_index=True)


def test_a_loss_near_ln_kb_needs_the_mechanism():
    ctx = RunContext("r", batch_size=64)
    ln3b = math.log(192)
    # no ranks, no logits: a loss that only averages ln(3B) while it moves step to step is not evidence
    wavy = _frame([(s, "loss_clip", "value", ln3b + (0.4 if s % 2 else -0.4)) for s in range(40)]
                  + [(s, "loss_clip", "chance", math.log(64)) for s in range(40)])
    assert ChanceMismatch()(wavy, ctx) == []
    # ... while a loss at ln(3B) at every step is (a uniform softmax over 3B columns)
    [f] = ChanceMismatch()(_flat_loss(ln3b, math.log(64)), ctx)
    assert f.evidence["mechanism"]["reading"] == "loss_constant_at_ln_kB"
    # observed B-column logits that themselves give this loss: confidently wrong logits, not more candidates
    assert ChanceMismatch()(_with_logits(_flat_loss(ln3b, math.log(64)), 64, loss_diagonal=ln3b), ctx) == []
    # observed B-column logits at chance while the loss reads ln(3B): the loss saw more candidates
    [g] = ChanceMismatch()(_with_logits(_flat_loss(ln3b, math.log(64)), 64, loss_diagonal=math.log(64)), ctx)
    assert g.evidence["mechanism"]["reading"] == "observed_logits_at_chance"
    # logits with 3B columns: the direct reading
    [h] = ChanceMismatch()(_with_logits(_flat_loss(ln3b, math.log(64)), 192), ctx)
    assert h.evidence["mechanism"] == {"reading": "logits_cols", "logits_cols": 192}


def _gathered_run(tower_grad: bool, candidates: int = 64, loss: float = math.log(64) * 1.3):
    """A gathered-loss run (batch 32 per rank): the towers' parameters with or without gradient; the temperature
    scalar with one."""
    rows = [(s, "clip", "value", loss) for s in range(20)] + [(s, "clip", "chance", math.log(candidates))
                                                               for s in range(20)]
    df = _frame(rows)
    grads = []
    for s in range(20):
        grads.append({"step": s, "probe": "gradient_flow", "target": "logit_scale", "metric": "grad_norm",
                      "value": 0.1})
        for p in ("resampler.latents", "image_proj.weight", "text_proj.weight"):
            metric, v = ("grad_norm", 0.5) if tower_grad else ("grad_is_none", 1.0)
            grads.append({"step": s, "probe": "gradient_flow", "target": p, "metric": metric, "value": v})
    return pd.concat([df, pd.DataFrame(grads)], ignore_index=True)


def test_a_gather_that_cuts_every_tower_off_the_loss_is_named_beside_the_cut_path():
    from diagnose.core.rules import rank_root_causes
    from diagnose.core.rules.distributed import GatheredWithoutGradient

    ctx = RunContext("r", batch_size=32, candidates=64)
    [f] = GatheredWithoutGradient()(_gathered_run(tower_grad=False), ctx)
    assert f.id == "gathered_without_gradient" and f.severity == "error"
    assert f.evidence["ranks_implied"] == 2 and f.evidence["with_gradient"] == ["logit_scale"]
    assert f.evidence["parameters_without_gradient_count"] == 3
    # the whole catalogue: the cut path first (no gradient reaches either tower), the gather that cut it beside it
    findings = [x.to_dict() for x in run_rules(_gathered_run(tower_grad=False), ctx)]
    assert {"gathered_without_gradient", "no_gradient"} <= {x["id"] for x in findings}
    causes = [c["cause"] for c in rank_root_causes(findings, {"learned": False})]
    assert causes[:2] == ["no_gradient_path", "distributed_gradient_missing"]
    # near misses: the towers get gradients; nothing gathered (candidates = batch); a run that learned
    assert GatheredWithoutGradient()(_gathered_run(tower_grad=True), ctx) == []
    assert GatheredWithoutGradient()(_gathered_run(tower_grad=False, candidates=32),
                                     RunContext("r", batch_size=32, candidates=32)) == []
    assert GatheredWithoutGradient()(_gathered_run(tower_grad=False, loss=0.2), ctx) == []


def test_a_one_rank_process_group_says_a_gather_can_be_there():
    """Under torchrun with one process the candidates equal the batch: the world size the watch records for a
    process group of one rank is what says a gather can cut the graph there."""
    from diagnose.core.rules.distributed import GatheredWithoutGradient

    ctx = RunContext("r", batch_size=32, candidates=32)
    run = _gathered_run(tower_grad=False, candidates=32)
    one_rank = pd.concat([run, _frame([(s, "extras", "world_size", 1.0) for s in range(20)])], ignore_index=True)
    [f] = GatheredWithoutGradient()(one_rank, ctx)
    assert f.evidence["world_size"] == 1 and "process group of 1 rank" in f.message
    assert GatheredWithoutGradient()(run, ctx) == []  # no process group: nothing says features were gathered
    one_rank_learning = pd.concat([_gathered_run(tower_grad=True, candidates=32), one_rank[one_rank["target"]
                                                                                            == "extras"]])
    assert GatheredWithoutGradient()(one_rank_learning, ctx) == []  # the towers get gradients


def test_the_watch_records_a_one_rank_process_group(tmp_path):
    import torch
    import torch.distributed as dist
    from torch import nn

    import diagnose

    store = tmp_path / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        model = nn.Linear(4, 4)
        w = diagnose.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), alarm="off", probes="cheap")
        x = model(torch.randn(8, 4))
        loss = x.pow(2).mean()
        loss.backward()
        w.observe(0, losses={"loss": loss})
        rec = w.records
        w.close()
    finally:
        dist.destroy_process_group()
    got = rec[(rec["target"] == "extras") & (rec["metric"] == "world_size")]["value"].tolist()
    assert got == [1.0], got


def test_gather_with_grad_gives_a_local_loss_the_global_gradient(tmp_path):
    """The fix for distributed_gradient_missing on 2 gloo ranks: without it the gradient DDP applies misses the
    cross-rank terms (direction off); with it, it is the global loss's gradient."""
    from .ranks import run_ranks
    from .workers import gathered_local_loss_gradient

    plain = run_ranks(gathered_local_loss_gradient, None, str(tmp_path))
    fixed = run_ranks(gathered_local_loss_gradient, "gather_with_grad", str(tmp_path))
    assert plain[0]["cosine"] < 0.99
    for r in fixed:
        assert r["cosine"] > 0.9999 and abs(r["scale"] - 1) < 1e-3, r
