"""Multi-GPU contrastive training whose features are gathered with `torch.distributed.all_gather` (no
autograd): on more than one GPU the loss never leaves ln(global batch) or above.

What the user did (3dlg-hcvc/DuoduoCLIP#10): DuoduoCLIP, a CLIP-style model trained with DDP, gathers the
image and text features of every rank before the loss (its line uses `dist.nn.all_gather`), so each row is
scored against the global batch. Not finding `dist.nn.all_gather` in the torch documentation, the user
replaced it with `dist.all_gather` and trained on 4 GPUs:

    text_feat_all = [torch.zeros_like(text_feat) for _ in range(world)]
    dist.all_gather(text_feat_all, text_feat); text_feat = torch.cat(text_feat_all)   # likewise image_feat

"when trainer.device = 1 the loss decreases decently, but when trainer.device = 4 and using
dist.all_gather(), the loss won't go down and higher than single gpu training".

Why: `torch.distributed.all_gather` writes the other ranks' values into preallocated tensors; the result
has no autograd history, not even for the rank's own slot. The loss is built only from these gathered
copies, so no gradient reaches the encoders: the backward runs (the learnable logit scale is the only
tensor with a gradient) and the optimizer steps, but the towers never move. The loss stays where the
untrained towers put it, at or above ln(global batch) = ln(64) (above it here: the random towers' unit
features are alike, and at scale 1/0.07 that costs more than chance; the logit scale creeps down by ~1e-3
a step). The user's own diagnosis in the thread: "torch.distributed.all_gather does not keep track of
autograd, leading to no gradient calculated and flowed back to the model".

Fix: the repository's original differentiable collective, `torch.distributed.nn.all_gather` (still in torch
2.x; `from torch.distributed.nn import all_gather`), whose backward sends every rank's gradient for a slot back
to the rank that owns it.

The run emulates the 4 DDP ranks in one process, faithfully to what DDP computes: each rank's 16-pair shard
goes through the (shared, identical) replica, `dist_all_gather` returns value copies without history as
`torch.distributed.all_gather` does, `dist_nn_all_gather` returns the live tensors (autograd then sums each
rank's contribution to a slot, which is what the collective's backward does), and the ranks' losses are
averaged before one backward (DDP's gradient all-reduce is a mean over ranks). Rank 0 calls `observe`: its
local features, its (64, 64) logits, candidates=64.

Model: flamingo-pytorch PerceiverResampler over frozen patch tokens (common.ResamplerAligner), AdamW lr 1e-3,
local batch 16 x 4 ranks, 100 steps.

Validation (validate.py, final loss / ln(64), seeds 0 1 2):
    fault: 1.3867, 1.3162, 1.2979 (final 5.77, 5.47, 5.40 against ln 64 = 4.16; first step 5.98, 5.48, 5.92)
    fixed: 0.0226, 0.0280, 0.0268

Ground truth: distributed_gradient_missing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common import ResamplerAligner, token_pairs

THREADS = ("3dlg-hcvc/DuoduoCLIP#10",)
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"

WORLD, LOCAL_B = 4, 16


def dist_all_gather(shards: list[torch.Tensor]) -> list[torch.Tensor]:
    """torch.distributed.all_gather(out_list, t): every rank receives value copies, no autograd history."""
    return [s.detach().clone() for s in shards]


def dist_nn_all_gather(shards: list[torch.Tensor]) -> list[torch.Tensor]:
    """torch.distributed.nn.all_gather(t): differentiable; backward returns each slot's gradient to its rank."""
    return list(shards)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gather = dist_nn_all_gather if fixed else dist_all_gather
    g = torch.Generator().manual_seed(seed + 1)
    global_b = WORLD * LOCAL_B

    session = watch(model, optimizer, batch_size=LOCAL_B)
    for step in range(steps):
        idx = torch.randperm(len(tokens), generator=g)[:global_b]
        # DistributedSampler: rank r gets its own 16 pairs; every rank runs the same replica on them
        img_local, txt_local = [], []
        for r in range(WORLD):
            shard = idx[r * LOCAL_B:(r + 1) * LOCAL_B]
            img, txt = model(tokens[shard], texts[shard])
            img_local.append(img)
            txt_local.append(txt)

        rank_losses = []
        for r in range(WORLD):  # what each rank computes after the collective
            image_feat = torch.cat(gather(img_local), dim=0)
            text_feat = torch.cat(gather(txt_local), dim=0)
            logit_scale = model.logit_scale.exp()
            logits = logit_scale * image_feat @ text_feat.t()
            labels = torch.arange(global_b)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            rank_losses.append(loss)
            if r == 0:
                rank0_logits, rank0_loss = logits, loss

        optimizer.zero_grad()
        torch.stack(rank_losses).mean().backward()  # DDP: gradients averaged over the ranks
        session.observe(step, losses={"clip": rank0_loss}, embeddings={"image": img_local[0], "text": txt_local[0]},
                        logits=rank0_logits, batch_size=LOCAL_B, candidates=global_b,
                        inputs=tokens[idx[:LOCAL_B]])
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=math.log(100))
    session.close()
