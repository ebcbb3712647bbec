"""The loss that is logged is all-reduced with the default SUM across the ranks and never divided by
the world size, so the curve reads 8x the contrastive loss the model is trained on.

What the user did: a DistributedDataParallel alignment job on 8 ranks (a perceiver-pytorch Perceiver
over frozen patch tokens, a small text MLP, the CLIP loss over each rank's local batch of 8 pairs).
Each rank backpropagates its own loss and DDP averages the gradients; for the log, the script makes
the loss "global" the way HRNet's trainer does -- `reduced_loss = reduce_tensor(loss)` with
`dist.all_reduce(..., op=SUM)` -- and feeds `reduced_loss.item()` to its meter and its monitor.

What went wrong and why: `all_reduce` defaults to `ReduceOp.SUM`, so the logged value is the sum of
the 8 ranks' losses, not their mean. It starts near 8 x ln(8) = 16.6 and, as the model learns, settles
around 8 x the true local loss: the true per-rank CLIP loss falls to 0.10-0.13 x ln(8) while the logged
curve flattens near 0.8-1.1 x ln(8), which reads as "the 8-GPU run is stuck at chance" although the
model aligns. Training itself is unaffected: only the number shown is wrong.

Thread: HRNet/HRNet-Semantic-Segmentation#34 ("wrong loss value logged in the pytorch 1.1 version"):
`reduced_loss = reduce_tensor(loss)` uses the default 'sum' op to reduce across processes, "the loss
value logged is the sum over different processes, but it should be averaged".

Fix (fixed=True): divide the reduced loss by the world size before logging it (an all-reduce mean).

Here the 8 ranks are emulated in one process: each rank's local batch and local loss, DDP's gradient
averaging (backward of the mean of the rank losses, one shared model standing for the identical
replicas), and the all_reduce SUM the script logs. The watch sees rank 0: its local embeddings and
8 x 8 logits, and the reduced loss it logs.

Validation (validate.py, 100 steps, final logged loss = mean of the last 5 / ln(8) = 2.0794):
  fault (logged): seed 0 1.7186 (0.827), seed 1 2.2210 (1.068), seed 2 2.1855 (1.051)
  fixed (logged = the objective): seed 0 0.2148 (0.103), seed 1 0.2776 (0.134), seed 2 0.2732 (0.131)
  In the fault run the objective (mean rank loss) is the same as the fixed run's; the logged value is 8x it.

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("HRNet/HRNet-Semantic-Segmentation#34",)
CAUSE = "logging_misstates_loss"
FAMILY = "distributed"

WORLD = 8  # ranks of the job
LOCAL_BATCH = 8  # pairs per rank


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    n = len(tokens)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)
    # DistributedSampler: each rank its own shard of every global batch
    g = torch.Generator().manual_seed(seed)

    def reduce_tensor(t, world_size):  # dist.all_reduce(t) -- ReduceOp.SUM by default
        reduced = torch.stack(t).sum()
        return reduced / world_size if fixed else reduced

    session = watch(model, optimizer, batch_size=LOCAL_BATCH)
    for step in range(steps):
        perm = torch.randperm(n, generator=g)[: WORLD * LOCAL_BATCH].view(WORLD, LOCAL_BATCH)
        rank_losses, rank0 = [], None
        for rank in range(WORLD):
            img, txt = model(tokens[perm[rank]], texts[perm[rank]])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)  # each rank's local CLIP loss
            rank_losses.append(loss)
            if rank == 0:
                rank0 = (img, txt, logits)

        optimizer.zero_grad()
        torch.stack(rank_losses).mean().backward()  # each rank's backward + DDP's gradient all-reduce (mean)
        reduced_loss = reduce_tensor([l.detach() for l in rank_losses], WORLD)  # what the script logs
        img, txt, logits = rank0
        session.observe(step, losses={"clip": reduced_loss}, embeddings={"image": img, "text": txt},
                        logits=logits, batch_size=LOCAL_BATCH, inputs=tokens[perm[0]])
        optimizer.step()
    session.close()
