"""Augmented image-caption pairs streamed in the order they were written: every batch holds 16 views of only two
captions, so each row's own caption appears 16 times among its 32 candidates, 15 of them scored as negatives.

What the user did: to get more pairs out of a small captioned set, they augmented the images (16 jittered views per
image, pixel noise), wrote the (view, caption) pairs out image by image, and trained a CLIP model
(transformers CLIPModel from a tiny config, random weights) on them with `return_loss=True`, i.e. the symmetric
in-batch InfoNCE with `arange(B)` targets. The pairs are read back as a stream (an IterableDataset over the written
shard; DataLoader cannot shuffle an iterable dataset), batch 32.

What went wrong and why: a batch of 32 consecutive pairs is 16 views of caption A and 16 views of caption B. The
caption rows of a batch are therefore 16 identical token sequences twice over: for an image row, its own caption
sits in 16 identical columns and the loss pushes it away from 15 of them; for a caption row, the 16 rows that share
its text must each pick a different one of the 16 same-image views, which no model can do. Both directions are
bounded below by ln(16) = 2.77 however well the model learns (ln(16) / ln(32) = 0.8), and the only signal a batch
carries is which of two captions a view belongs to; in 100 steps the run does not even reach that floor and stays at
ln(32). This is the situation of huggingface/sentence-transformers#3189: augmented
queries over a smaller set of unique corpus texts put the same positive into a batch several times, so "anchor_i
should have high similarity to positive_i and low similarity to positive_j with j != i, *but* positive_i ==
positive_j"; the maintainer: "this can inhibit training. Because of this, we added the `no_duplicates` batch sampler
... which avoids *any* duplicate texts in a single batch".

Fix (fixed=True): the maintainer's fix: a map-style dataset over the same pairs and a no-duplicates batch sampler
(random order, a pair whose caption is already in the batch waits for the next batch), so the 32 rows of a batch have
32 different captions and every off-diagonal candidate is a true negative.

Validation (validate.py, 100 steps, batch 32, ln 32 = 3.466; final / ln(32), seeds 0, 1, 2):
    fault 0.9763 / 0.9954 / 1.0330 (final 3.384 / 3.450 / 3.580; no model can go below ln(16) = 2.773 here)
    fixed 0.1943 / 0.2360 / 0.1883 (final 0.673 / 0.818 / 0.653)

Ground truth: false_negatives.
"""

from __future__ import annotations

import random

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from common import image_caption_pairs, tiny_clip

THREADS = ("huggingface/sentence-transformers#3189",)
CAUSE = "false_negatives"
FAMILY = "batch and candidates"

N_IMAGES = 512
VIEWS = 16  # augmented views written per image
BATCH = 32


def write_augmented_pairs(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """(view, caption ids, image id), written image by image: all views of image 0, then image 1, ..."""
    pixels, ids = image_caption_pairs(N_IMAGES, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    pairs = []
    for i in range(N_IMAGES):
        for _ in range(VIEWS):
            view = pixels[i] + 0.1 * torch.randn(pixels[i].shape, generator=g)
            pairs.append((view, ids[i], i))
    return pairs


class PairStream(IterableDataset):
    def __init__(self, pairs):
        self.pairs = pairs

    def __iter__(self):
        for view, caption, _ in self.pairs:
            yield view, caption


class PairTable(Dataset):
    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, k):
        view, caption, _ = self.pairs[k]
        return view, caption


class NoDuplicatesBatchSampler(Sampler):
    """sentence-transformers' `batch_sampler="no_duplicates"`: random order, no caption twice in a batch."""

    def __init__(self, keys: list[int], batch_size: int, seed: int):
        self.keys, self.batch_size, self.rng = keys, batch_size, random.Random(seed)

    def __iter__(self):
        remaining = list(range(len(self.keys)))
        self.rng.shuffle(remaining)
        while len(remaining) >= self.batch_size:
            batch, seen, deferred = [], set(), []
            for k in remaining:
                if len(batch) < self.batch_size and self.keys[k] not in seen:
                    batch.append(k)
                    seen.add(self.keys[k])
                else:
                    deferred.append(k)
            if len(batch) < self.batch_size:
                return
            yield batch
            remaining = deferred

    def __len__(self):
        return len(self.keys) // self.batch_size


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pairs = write_augmented_pairs(seed)
    if fixed:
        sampler = NoDuplicatesBatchSampler([image_id for _, _, image_id in pairs], BATCH, seed)
        loader = DataLoader(PairTable(pairs), batch_sampler=sampler)
    else:
        loader = DataLoader(PairStream(pairs), batch_size=BATCH)

    model = tiny_clip(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    session = watch(model, optimizer, batch_size=BATCH)
    for step, (views, captions) in enumerate(loader):
        if step == steps:
            break
        out = model(input_ids=captions, pixel_values=views, return_loss=True)
        optimizer.zero_grad()
        out.loss.backward()
        session.observe(step, losses={"clip": out.loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=BATCH)
        optimizer.step()
    session.close()
