"""Distributed CLIP loss over gathered features whose targets sit on the local diagonal on every rank.

What the user did: trained a Perceiver-resampler image encoder (flamingo-pytorch) against a text
projection with a CLIP loss under DDP on 8 GPUs, 8 pairs per GPU. To get 64 candidates per row they
followed the "sharded similarity" recipe (openai/CLIP#132): each rank `all_gather`s the image and text
features of every rank (plain `torch.distributed.all_gather`, the local shard put back so that it keeps
its gradient), then scores its own 8 rows against all 64 columns, `logits (8, 64)`. The targets were
kept from the single-GPU script: `labels = torch.arange(8)`, the first 8 columns.

What went wrong and why: the gathered columns are ordered by rank, so rank r's own captions sit in
columns 8*r .. 8*r+7. Only on rank 0 is `arange(8)` the matching pair; on ranks 1-7 every row is told
that its match is a caption of rank 0's shard (an unrelated pair), and its true caption, in column
8*r+i, is scored as a negative. DDP averages the eight ranks' gradients, so 7/8 of every update pulls
random image-caption pairs together and pushes true pairs apart; only rank 0's eighth carries the
signal. The loss rank 0 logs (its own targets are right) drops a little in the first steps and then
stays at ~0.78 ln(64) (over 300 steps as well): the model does not learn the pairing.
The same mistake, positives/self-pairs assumed on the local diagonal of a (local, global) similarity
matrix whatever the rank, was confirmed and fixed in solo-learn's SimCLR loss (vturrisi/solo-learn#206,
"the diagonal is wrong and we should set it according to the rank of the device"); in CLIP4Clip the
user moving to a local (B/n, B) similarity matrix noted that the positives for a rank other than 0 lie
at columns local_rank*local_batch .. (local_rank+1)*local_batch and had to offset the diagonal
(ArrowLuo/CLIP4Clip#113, from #101).

The eight ranks run in this one process (no GPUs here): each rank's forward is its 8-row shard, the
`all_gather` is emulated with the same semantics (other ranks' features arrive without gradient, the
local shard is put back), and the DDP gradient average is the mean of the eight ranks' losses (one
model: DDP keeps the replicas identical). As under torchrun, only rank 0 reports to the watch.

Fix (the threads'): offset the targets by the rank, `labels = torch.arange(8) + 8 * rank`.

Validation (validate.py, 100 steps, final loss / ln(64) on rank 0, seeds 0/1/2):
fault 0.7807 / 0.8179 / 0.7747 (final loss 3.247 / 3.402 / 3.222 vs ln 64 = 4.159);
fixed 0.0411 / 0.0276 / 0.0278.

Ground truth: wrong_targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import ResamplerAligner, token_pairs

THREADS = ("vturrisi/solo-learn#206", "ArrowLuo/CLIP4Clip#113", "ArrowLuo/CLIP4Clip#101")
CAUSE = "wrong_targets"
FAMILY = "distributed"

WORLD = 8        # GPUs
LOCAL_B = 8      # pairs per GPU


def all_gather_no_grad(shards, rank):
    """What `dist.all_gather(out, x)` + `out[rank] = x` gives on `rank`: every rank's tensor, the remote
    ones without gradient, the local one still attached to the graph."""
    out = [s.detach() for s in shards]
    out[rank] = shards[rank]
    return torch.cat(out)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    global_b = WORLD * LOCAL_B
    session = watch(model, optimizer, batch_size=LOCAL_B)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (global_b,), generator=g)   # DistributedSampler: shard r = rows r*8..
        img_shards, txt_shards = [], []
        for rank in range(WORLD):
            sl = idx[rank * LOCAL_B:(rank + 1) * LOCAL_B]
            img, txt = model(tokens[sl], texts[sl])
            img_shards.append(img)
            txt_shards.append(txt)
        scale = model.logit_scale.exp()
        rank_losses, rank0 = [], None
        for rank in range(WORLD):
            all_img = all_gather_no_grad(img_shards, rank)
            all_txt = all_gather_no_grad(txt_shards, rank)
            logits_per_image = scale * img_shards[rank] @ all_txt.t()     # (8, 64)
            logits_per_text = scale * txt_shards[rank] @ all_img.t()
            labels = torch.arange(LOCAL_B)                                 # the single-GPU targets
            if fixed:
                labels = labels + LOCAL_B * rank
            loss = 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))
            rank_losses.append(loss)
            if rank == 0:
                rank0 = (loss, logits_per_image, labels)
        optimizer.zero_grad()
        torch.stack(rank_losses).mean().backward()                        # DDP: gradients averaged over ranks
        loss0, logits0, labels0 = rank0
        session.observe(step, losses={"clip": loss0}, embeddings={"image": img_shards[0], "text": txt_shards[0]},
                        logits=logits0, targets=labels0, extras={"logit_scale": scale}, batch_size=LOCAL_B,
                        candidates=global_b)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
    session.close()
