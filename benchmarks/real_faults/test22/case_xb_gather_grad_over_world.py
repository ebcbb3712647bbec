"""Distributed CLIP loss with the "put the local slot back" all_gather: every rank's encoder gradient is 1/world_size
of the single-GPU gradient, and plain SGD at the single-GPU learning rate barely moves the encoders.

What the user did: a Perceiver-resampler aligner (flamingo-pytorch) trained on 8 data-parallel ranks with 8 pairs
each. To score every row against all 64 candidates they used the recipe that circulates for contrastive losses under
DistributedDataParallel (pytorch-metric-learning#10, DeCLUTR's first version): `dist.all_gather` the image and text
embeddings, overwrite this rank's slot of the gathered list with the local tensor (the only one with a grad_fn),
concatenate, and compute the full 64 x 64 symmetric InfoNCE loss on every rank; DDP then averages the gradients over
ranks. Optimizer: SGD with momentum at the learning rate that trains the same model on one GPU with a 64-pair batch.
Here the 8 ranks are simulated in one process: each rank encodes its own shard, receives the other shards detached
(what `dist.all_gather` hands back), computes its loss, and the ranks' losses are averaged before `backward()`
(what DDP's gradient all-reduce-mean does); the logged loss is rank 0's.

What went wrong and why: every rank computes the same global loss L, but rank r only back-propagates into its own
slot, so its gradient is dL/d(its embeddings), which is already the complete gradient for those rows. DDP's average
over the 8 ranks then divides it by 8: the encoders receive (1/world_size) * grad L instead of grad L (the learnable
temperature, a local parameter in every rank's graph, still gets its full gradient). With Adam the constant would
mostly cancel; with SGD it is an 8x smaller step, and the run sits at ln(64) while the same script on one GPU
learns. DeCLUTR's author found the same thing after shipping the recipe ("This PR rescales the gradients by the
number of GPUs (world_size) after calling torch.all_gather. This is necessary, otherwise, their scale will be off by
1/N", JohnGiorgi/DeCLUTR#212), and the same was reported against pytorch-metric-learning's distributed wrapper,
which uses the same recipe ("the loss function should be multiplied by world_size"; the maintainer agreed, labelled
it a bug and fixed it in dev, KevinMusgrave/pytorch-metric-learning#363). The temperature is clamped at ln(100)
after each step, as open_clip does.

Fix (fixed=True): multiply each rank's loss by world_size before backward (the logged value stays the unscaled loss).

Validation (validate.py, 100 steps, candidates 64, ln 64 = 4.159; final / ln(64) over seeds 0, 1, 2; the same
model on one process with the 64-pair batch and the same SGD settings ends at 0.218 / 0.225 / 0.135):
    fault 1.0444 / 0.9324 / 0.7993 (final 4.344 / 3.878 / 3.324)
    fixed 0.3237 / 0.1521 / 0.0733 (final 1.346 / 0.633 / 0.305)

Ground truth: distributed_gradient_scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("JohnGiorgi/DeCLUTR#212", "KevinMusgrave/pytorch-metric-learning#363")
CAUSE = "distributed_gradient_scale"
FAMILY = "distributed"

WORLD_SIZE = 8  # ranks
LOCAL_BATCH = 8  # pairs per rank
LR = 2e-4  # the single-GPU learning rate for a 64-pair batch


def all_gather_keep_local(local: torch.Tensor, shards: list[torch.Tensor], rank: int) -> torch.Tensor:
    """What `dist.all_gather(gathered, local)` followed by `gathered[rank] = local` gives rank `rank`: every other
    rank's tensor arrives without a grad_fn, the local one keeps it."""
    gathered = [s.detach() for s in shards]
    gathered[rank] = local
    return torch.cat(gathered)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    global_batch = WORLD_SIZE * LOCAL_BATCH
    perm, pos = torch.randperm(len(tokens), generator=g), 0

    session = watch(model, optimizer, batch_size=LOCAL_BATCH)
    for step in range(steps):
        if pos + global_batch > len(perm):
            perm, pos = torch.randperm(len(tokens), generator=g), 0
        idx = perm[pos:pos + global_batch]
        pos += global_batch
        # DistributedSampler: rank r gets every WORLD_SIZE-th index of the global batch
        shards = [idx[r::WORLD_SIZE] for r in range(WORLD_SIZE)]

        # each rank's forward on its own shard
        img = [F.normalize(model.encode_image(tokens[s]), dim=-1) for s in shards]
        txt = [F.normalize(model.text(texts[s]), dim=-1) for s in shards]

        rank_losses, rank0 = [], None
        for rank in range(WORLD_SIZE):
            all_img = all_gather_keep_local(img[rank], img, rank)
            all_txt = all_gather_keep_local(txt[rank], txt, rank)
            logits = model.logit_scale.exp() * all_img @ all_txt.t()
            loss = clip_loss(logits)  # the full 64 x 64 loss, the same value on every rank
            if rank == 0:
                rank0 = (loss, logits)
            if fixed:
                loss = loss * WORLD_SIZE  # DeCLUTR#212 / pytorch-metric-learning#363: undo DDP's 1/world_size
            rank_losses.append(loss)

        optimizer.zero_grad()
        torch.stack(rank_losses).mean().backward()  # DDP: gradients averaged over the ranks
        loss0, logits0 = rank0  # rank 0 logs and watches: its own rows, the logits its loss used
        session.observe(step, losses={"clip": loss0}, embeddings={"image": img[0], "text": txt[0]},
                        logits=logits0, batch_size=LOCAL_BATCH, candidates=global_batch,
                        inputs=tokens[shards[0]])
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
    session.close()
