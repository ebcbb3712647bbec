"""Global batch cut from 8 GPUs x 32 to 2 GPUs x 16 pairs, learning rate kept at the config default: stuck at ln(32).

What the user did: retrained the MUGE image-retrieval baseline (an open_clip-style CLIP trainer: every rank
all-gathers the image and text features, puts its own shard back in with its gradient, and computes the global
symmetric CLIP loss) on 2 GPUs x 16 pairs instead of the configured 8 GPUs x 32, and left the configured
learning rate as it was. Reproduced here with a tiny transformers CLIPModel (random weights), AdamW, the two
ranks simulated in one process (DDP's gradient averaging = the mean of the ranks' losses, each rank's loss
reaching the model only through its own shard), rank 0 observed.

What went wrong and why: with the much smaller global batch the default learning rate is far too high for the
model: single updates rewrite the towers' layers instead of nudging them, and the loss locks onto chance for
the 32 candidates. The user's report (MUGE-2021/image-retrieval-baseline#1): "loss就卡在3.46左右不再下降"
(3.46 = ln 32, the 2x16 global batch), val loss fixed at 2.7725 (= ln 16). The maintainer: the batch is much
smaller than the default (8 cards x 32 -> 2 cards x 16), which makes contrastive training less stable, "此时需要
减小默认的学习率" - lower the learning rate from the default 8e-5 to 1e-5; with the same 2-card setup and the
lower rate the loss no longer sticks at 3.4 and keeps converging.

Fix (fixed=True): the learning rate divided by 8 (the thread's 8e-5 -> 1e-5), nothing else changed.

Validation (validate.py, 100 steps, 2 ranks x 16, candidates 32, ln 32 = 3.466): final loss / ln(32)
  fault (lr 1.6e-2): seed 0 1.0000, seed 1 1.0000, seed 2 0.8188 (final loss 3.466, 3.466, 2.838)
  fixed (lr 2e-3):   seed 0 0.3511, seed 1 0.4135, seed 2 0.2953 (final loss 1.217, 1.433, 1.023)

Ground truth: learning_rate_too_high.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("MUGE-2021/image-retrieval-baseline#1",)
CAUSE = "learning_rate_too_high"
FAMILY = "batch and candidates"

WORLD_SIZE = 2
B = 16  # per GPU
N = 4096
DEFAULT_LR = 1.6e-2  # the config's learning rate (set for the 8 x 32 run)


def gather_features(per_rank: list[torch.Tensor], rank: int) -> torch.Tensor:
    """dist.all_gather (no gradient) with this rank's own shard put back, as open_clip's gather_features does."""
    return torch.cat([f if r == rank else f.detach() for r, f in enumerate(per_rank)])


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pixels, ids = image_caption_pairs(N, seed=seed)
    model = tiny_clip(seed=seed)
    lr = DEFAULT_LR / 8 if fixed else DEFAULT_LR
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.2)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    per_step = WORLD_SIZE * B
    for step in range(steps):
        if step % (N // per_step) == 0:
            order = torch.randperm(N, generator=g)  # DistributedSampler: a new shuffle each epoch
        start = (step % (N // per_step)) * per_step
        shards = order[start:start + per_step].view(WORLD_SIZE, B)  # one shard per rank
        img = [F.normalize(model.get_image_features(pixel_values=pixels[s]).pooler_output, dim=-1) for s in shards]
        txt = [F.normalize(model.get_text_features(input_ids=ids[s]).pooler_output, dim=-1) for s in shards]
        scale = model.logit_scale.exp()
        optimizer.zero_grad()
        rank_losses = []
        for rank in range(WORLD_SIZE):
            all_img, all_txt = gather_features(img, rank), gather_features(txt, rank)
            logits = scale * all_img @ all_txt.t()  # global logits, 32 x 32
            loss = clip_loss(logits)
            rank_losses.append(loss)
            if rank == 0:
                obs = (loss, all_img, all_txt, logits)
        torch.stack(rank_losses).mean().backward()  # DDP: gradients averaged over the ranks
        loss, all_img, all_txt, logits = obs
        session.observe(step, losses={"clip": loss}, embeddings={"image": all_img, "text": all_txt}, logits=logits,
                        candidates=WORLD_SIZE * B)
        optimizer.step()
    session.close()
