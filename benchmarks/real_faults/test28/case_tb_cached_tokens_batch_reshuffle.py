"""Alignment of a flamingo-pytorch resampler to caption features on top of a frozen vision tower. As the
DreamBooth/LoRA training scripts do with `--cache_latents`, the user runs the frozen tower once over the data set
before training, through the training dataloader, and appends each batch's output to a list; the training loop then
takes `cache[step]` for the batch at that step and pairs it with the captions of the batch the dataloader yields.
Batches come from a bucket batch sampler (membership built once) that reshuffles the order of its batches on every
`__iter__`.

What goes wrong: the caching pass and every training epoch are separate iterations of the sampler, so each gets a
different batch order. `cache[step]` holds the tokens of whatever batch sat at that position during caching, while
the captions come from the batch at that position now: images and captions belong to different samples (only 1 in
32 steps lines up by chance). No error is raised; the pairs carry no shared signal and the CLIP loss stays at
ln(32).

Threads: huggingface/diffusers#13353 ("BucketBatchSampler reshuffled precomputed batches on each __iter__() call.
DreamBooth training scripts precompute latents and/or prompt embeddings and later consume them by dataloader step
index, so changing batch order between the caching pass and the training pass can misalign the cached tensors with
the current batch"; fixed by shuffling the batch list once at construction) and huggingface/diffusers#13712 (caches
keyed by sample index instead of step).

Fix (fixed=True): the sampler shuffles its batches once, at construction, and yields them in that order on every
iteration (diffusers#13353), so `cache[step]` belongs to the batch at that step.

Validation (validate.py, seeds 0/1/2, 100 steps, ln(32) = 3.466; final CLIP loss / ln(B)): fault 3.493 / 3.474 /
3.475 (ratio 1.008 / 1.002 / 1.003); fixed 0.245 / 0.293 / 0.287 (ratio 0.071 / 0.085 / 0.083).

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from common import D, ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/diffusers#13353", "huggingface/diffusers#13712")
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B = 32
N = 1024  # 32 batches per epoch


class BucketBatchSampler:
    """Batches of dataset indices, built once (the DreamBooth scripts group them by aspect-ratio bucket);
    `shuffle_batches_each_epoch` reshuffles the ORDER of the batches on every `__iter__`."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle_batches_each_epoch: bool = True):
        self.rng = random.Random(seed)
        order = list(range(n))
        self.rng.shuffle(order)
        self.batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        self.rng.shuffle(self.batches)
        self.shuffle_batches_each_epoch = shuffle_batches_each_epoch

    def __iter__(self):
        if self.shuffle_batches_each_epoch:
            self.rng.shuffle(self.batches)
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    raw_tokens, texts = token_pairs(N, seed=seed)
    # the frozen vision tower: run once over the data set and cache its patch tokens (as --cache_latents does)
    vision_tower = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D)).requires_grad_(False).eval()
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    # diffusers#13353: with the per-__iter__ reshuffle gone, batch order is fixed once at construction
    sampler = BucketBatchSampler(N, B, seed=seed + 1, shuffle_batches_each_epoch=not fixed)

    cache = []  # cached tokens, one entry per dataloader step of the caching pass
    with torch.no_grad():
        for batch_idx in sampler:
            cache.append(vision_tower(raw_tokens[batch_idx]))

    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        for i, batch_idx in enumerate(sampler):  # a new __iter__ each epoch
            if step >= steps:
                break
            vis_tokens = cache[i]  # looked up by step position, as the training loop did
            img, txt = model(vis_tokens, texts[batch_idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                            logits=logits, batch_size=B, inputs=vis_tokens)
            optimizer.step()
            step += 1
    session.close()
