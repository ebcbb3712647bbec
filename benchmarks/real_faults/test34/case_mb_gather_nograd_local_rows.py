"""Distributed CLIP loss on features gathered with `torch.distributed.all_gather`, the local rows read back
out of the gathered copy: no gradient reaches either tower, only the logit scale trains.

What the user did: a Perceiver-resampler (flamingo-pytorch) image tower and a linear text tower trained
with DDP on 4 ranks, 16 pairs per rank. To score every row against all 64 pairs of the global batch they
gathered the image and text features of every rank with `torch.distributed.all_gather` (the forum thread's
question: collect the outputs of all GPUs and compute one batch-level InfoNCE), then wrote the usual local
loss: the rank's own 16 rows against the 64 gathered columns, targets `arange(16) + rank * 16`. Being in
the middle of the gather code, they took their own rows from the gathered tensor (`all_img[rank*B:(rank+1)*B]`)
instead of the model's output. DDP complained that parameters received no gradient, so they set
`find_unused_parameters=True` and training ran silently.

What went wrong and why: `dist.all_gather` writes into preallocated buffers and records no autograd history:
every gathered tensor, the rank's own shard included, is a leaf without `grad_fn`. The only thing in the
logits with a gradient path is `logit_scale`, so `backward()` succeeds, the scale gets a gradient and every
weight of both towers gets none (AdamW skips them). The embeddings never move: the loss stays at or above
ln(64) (the initial scale of 14.3 sharpens random similarities; the scale's own gradient only walks it back
toward chance). The thread (discuss.pytorch.org 104227) asked exactly how to compute this batch-level loss
over gathered outputs and was told that "the gradients can be passed to collective operations"; they are not.
In KevinMusgrave/pytorch-metric-learning#302 the maintainer spells out the mechanism behind the working
recipe: the embeddings collected from the other GPU "come without gradients", so each rank's own embeddings
must enter the loss as the tensors its model produced.

Emulation: the ranks run in one process. DDP keeps the replicas identical, so one forward pass over the 64
pairs gives every rank's outputs (`split` into shards); `all_gather` hands back detached copies, as the
collective does; the mean of the ranks' losses is backpropagated, which is the gradient DDP's all-reduce
averages. The watch is rank 0's: its loss, its 16 x 64 logits, its own embeddings, `candidates=64`.

The fix (the standard recipe of the threads): the local rows are the model's own outputs and the gathered
list has the local shard put back (`gathered[rank] = local`), so each rank's features carry their gradient
(equivalently `torch.distributed.nn.all_gather`).

Validation (validate.py, 100 steps, B = 16 per rank, 64 candidates, chance ln(64) = 4.159; final loss / ln(64)):
  fault  seed 0: 4.1874 / 1.0069   seed 1: 4.3993 / 1.0578   seed 2: 5.4653 / 1.3141
  fixed  seed 0: 0.1359 / 0.0327   seed 1: 0.1120 / 0.0269   seed 2: 0.1068 / 0.0257

Ground truth: distributed_gradient_missing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import ResamplerAligner, token_pairs

THREADS = ("discuss.pytorch.org/t/how-to-collect-outputs-from-different-gpus-compute-a-batch-level-loss-and-do-backward/104227",
           "KevinMusgrave/pytorch-metric-learning#302")
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"

WORLD = 4  # DDP ranks
B = 16  # pairs per rank


def all_gather(shards: list[torch.Tensor]) -> list[torch.Tensor]:
    """What `torch.distributed.all_gather(out_list, local)` leaves in `out_list` on every rank: a copy of each
    rank's tensor, written into fresh buffers, with no autograd history (the collective is not differentiable)."""
    return [s.detach().clone() for s in shards]


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner()  # DDP(model, find_unused_parameters=True) on each rank
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randperm(len(tokens), generator=gen)[: WORLD * B]  # DistributedSampler: B pairs per rank
        img, txt = model(tokens[idx], texts[idx])  # every rank's forward (identical replicas)
        img_shards, txt_shards = list(img.split(B)), list(txt.split(B))
        scale = model.logit_scale.exp()
        rank_losses, rank0_logits = [], None
        for rank in range(WORLD):
            gathered_img, gathered_txt = all_gather(img_shards), all_gather(txt_shards)
            if fixed:  # keep this rank's own features (with their gradient) in the loss
                gathered_img[rank], gathered_txt[rank] = img_shards[rank], txt_shards[rank]
                local_img, local_txt = img_shards[rank], txt_shards[rank]
            all_img, all_txt = torch.cat(gathered_img), torch.cat(gathered_txt)
            if not fixed:  # the rank's rows, read back out of the gathered tensors
                local_img, local_txt = all_img[rank * B:(rank + 1) * B], all_txt[rank * B:(rank + 1) * B]
            logits_per_image = scale * local_img @ all_txt.t()
            logits_per_text = scale * local_txt @ all_img.t()
            labels = torch.arange(B) + rank * B
            loss = 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))
            rank_losses.append(loss)
            if rank == 0:
                rank0_logits = logits_per_image
        optimizer.zero_grad()
        torch.stack(rank_losses).mean().backward()  # DDP: gradients averaged over the ranks
        session.observe(step, losses={"clip": rank_losses[0]},
                        embeddings={"image": img_shards[0], "text": txt_shards[0]},
                        logits=rank0_logits, batch_size=B, candidates=WORLD * B)
        optimizer.step()
    session.close()
