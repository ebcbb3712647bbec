"""Multi-GPU CLIP loss that all-gathers the concatenation [image; text] of each rank in ONE collective and then
splits the gathered tensor in half, as if it held every rank's images followed by every rank's texts.

What the user did: a flamingo-pytorch PerceiverResampler aligner (frozen-backbone patch tokens -> resampler ->
projection, text features -> projection) trained with DDP on 4 GPUs, 16 pairs per GPU, and a global contrastive
batch of 64 (features gathered across ranks with a gradient-carrying GatherLayer, as in SimCLR / open_clip). To
save one collective per step they copied the SimCLR NT-Xent pattern: `z = cat(image, text)` on each rank,
`z_all = cat(GatherLayer.apply(z))`, then `all_image, all_text = z_all.chunk(2)` and targets `arange(64)`. On one
GPU this is exactly right; on 4 the loss never falls.

Why: `all_gather` returns the ranks' tensors in rank order, so `z_all` is [img_0, txt_0, img_1, txt_1, img_2,
txt_2, img_3, txt_3] (16 rows each), not [img_0..img_3, txt_0..txt_3]. Its first half ("images") is [img_0, txt_0,
img_1, txt_1] and its second half ("texts") is [img_2, txt_2, img_3, txt_3]: the diagonal target of row i points at
a different sample (image 0:i is told to match image 2:i, text 0:i to match text 2:i, ...), and no true image-caption
pair is even in the logit matrix. The targets no longer point at the matching pairs, so there is nothing to learn
except pulling unrelated samples together: the loss starts at 2.2 ln(64) (half the "image" rows are text
embeddings, scored against same-modality columns) and never gets below chance (1.5 ln(64) after 100 steps). It
only shows with world_size > 1, which is why the same code works single-GPU.

Threads: Spijkervet/SimCLR#30 ("The loss doesn't decrease when using multi nodes", stuck at ln of the global
batch while one node trains fine; several users confirm, and the diagnosis in the thread is that the mask and the
positive pairs are wrong after gathering the per-rank concatenation), fixed by Spijkervet/SimCLR#46 (the gathered
tensor is [z_i1, z_j1, z_i2, z_j2, ...], not [z_i1, ..., z_iw, z_j1, ..., z_jw]: build the pairs for that order).

Ranks are simulated in one process: DDP keeps the 4 replicas identical, so each rank's forward is the same module
applied to that rank's shard (what DistributedSampler gives), and `all_gather_with_grad` concatenates in rank order
exactly as GatherLayer + torch.cat does. Fix (fixed=True): gather the image and the text features separately (or,
equivalently, take each rank's first and second half of its block before concatenating).

Validation (validate.py, seeds 0/1/2, 100 steps, candidates 64, final CLIP loss / ln(64)):
fault 1.532 / 1.519 / 1.580 (above chance on every seed), fixed 0.027 / 0.024 / 0.023.

Ground truth: wrong_targets.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("Spijkervet/SimCLR#30", "Spijkervet/SimCLR#46")
CAUSE = "wrong_targets"
FAMILY = "distributed"

WORLD_SIZE = 4  # GPUs
PER_GPU_BATCH = 16  # pairs per GPU; 64 candidates per row after the gather


def all_gather_with_grad(per_rank: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat(GatherLayer.apply(x)) as every rank sees it: the ranks' tensors in rank order, the local one
    carrying its gradient (the ranks are simulated in this process, see the docstring)."""
    return torch.cat(per_rank, dim=0)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    sampler = torch.Generator().manual_seed(seed)
    global_batch = WORLD_SIZE * PER_GPU_BATCH

    session = watch(model, optimizer, batch_size=PER_GPU_BATCH)
    for step in range(steps):
        # DistributedSampler: one shuffled index list, a disjoint shard of 16 per rank
        shards = torch.randperm(len(tokens), generator=sampler)[:global_batch].view(WORLD_SIZE, PER_GPU_BATCH)
        local = [model(tokens[idx], texts[idx]) for idx in shards]  # each rank's forward

        if fixed:
            all_image = all_gather_with_grad([img for img, _ in local])
            all_text = all_gather_with_grad([txt for _, txt in local])
        else:
            # one collective for both towers, then split the gathered tensor in two
            all_feats = all_gather_with_grad([torch.cat([img, txt], dim=0) for img, txt in local])
            all_image, all_text = all_feats.chunk(2, dim=0)

        logits = model.logit_scale.exp() * all_image @ all_text.t()
        loss = clip_loss(logits)  # targets arange(64)
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": all_image, "text": all_text},
                        logits=logits, batch_size=PER_GPU_BATCH, candidates=global_batch)
        optimizer.step()
        optimizer.zero_grad()
    session.close()
