"""One caption with eight photos, expanded into eight (photo, caption) pairs and batched in file order: every
batch of 16 holds two captions eight times each, and the seven copies of a row's own caption are scored as its
negatives. The CLIP loss cannot go below ln(8) of ln(16).

What the user did: a catalogue where each of 128 item descriptions comes with 8 product photos. Following the
usual advice for a contrastive loss with one positive per row, they converted "1 caption with n photos" into n
(photo, caption) pairs with the obvious nested loop (caption by caption, photo by photo), stored them in that
order and trained a flamingo-pytorch Perceiver-resampler image tower and a linear text tower with the symmetric
CLIP loss on batches of 16 read in that order (the pairs file is streamed; no shuffling, no sampler).

What went wrong and why: each batch is 2 captions x 8 photos. In the image->text direction a photo's row has its
caption 8 times among the 16 columns, identical embeddings with identical logits, and the target is one of them:
at best 1/8 of the probability, loss >= ln(8). In the text->image direction the 8 identical caption rows share
one logit row while each names a different photo as its target: again >= ln(8). Chance is ln(16) = 2.77, so the
loss is pinned above 0.75 x chance and the gradient keeps pushing the photos of one item apart from their own
caption. huggingface/sentence-transformers#1345: a query with several positives may be written as (query, pos1),
(query, pos2), ... "but you must ensure that a batch does not include the same query twice"
(MultipleNegativesRankingLoss treats every other row of the batch as a negative);
huggingface/sentence-transformers#2827: convert "1 anchor with n positives" into n pairs "and use
batch_sampler=BatchSamplers.NO_DUPLICATES ... [which] ensures that for each sample there is no overlap with any
other sample in the batch".

The fix (the threads'): a no-duplicates batch sampler: shuffle the pairs each epoch and fill every batch with
pairs whose captions all differ, deferring a repeated caption to a later batch.

Validation (validate.py, 100 steps, B = 16, chance ln(16) = 2.773, floor of the fault ln(8) = 2.079;
final loss / ln(16)):
  fault  seed 0: 2.1003 / 0.7575   seed 1: 2.1292 / 0.7679   seed 2: 2.0964 / 0.7561   (at the ln(8) floor)
  fixed  seed 0: 0.0401 / 0.0145   seed 1: 0.0522 / 0.0188   seed 2: 0.0359 / 0.0129

Ground truth: false_negatives.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from common import DT, D, T, ResamplerAligner, clip_loss

THREADS = ("huggingface/sentence-transformers#1345", "huggingface/sentence-transformers#2827")
CAUSE = "false_negatives"
FAMILY = "batch and candidates"

B = 16
N_ITEMS, PHOTOS = 128, 8


def catalogue(seed: int = 0):
    """128 item descriptions (pooled text features) with 8 photos each (frozen-backbone patch tokens), all made
    from the item's latent concept; the photos of one item differ by their own view noise."""
    g = torch.Generator().manual_seed(seed)
    concepts = torch.randn(N_ITEMS, 8, generator=g)
    captions = concepts @ torch.randn(8, DT, generator=g) + 0.1 * torch.randn(N_ITEMS, DT, generator=g)
    photos = (concepts @ torch.randn(8, D, generator=g))[:, None, None, :] \
        + 0.5 * torch.randn(N_ITEMS, PHOTOS, T, D, generator=g)
    return photos, captions


class PairDataset(Dataset):
    """The expanded (photo, caption) pairs, written caption by caption: pair k is photo k % 8 of item k // 8."""

    def __init__(self, photos, captions):
        self.photos, self.captions = photos, captions
        self.item = torch.arange(N_ITEMS).repeat_interleave(PHOTOS)

    def __len__(self):
        return len(self.item)

    def __getitem__(self, k):
        i = int(self.item[k])
        return self.photos[i, k % PHOTOS], self.captions[i]


class NoDuplicatesBatchSampler(Sampler):
    """Shuffled batches in which no caption occurs twice (a repeated caption waits for a later batch)."""

    def __init__(self, item_of_pair: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.item, self.batch_size, self.generator = item_of_pair, batch_size, generator

    def __iter__(self):
        remaining = torch.randperm(len(self.item), generator=self.generator).tolist()
        while len(remaining) >= self.batch_size:
            batch, seen, rest = [], set(), []
            for k in remaining:
                it = int(self.item[k])
                if len(batch) < self.batch_size and it not in seen:
                    batch.append(k)
                    seen.add(it)
                else:
                    rest.append(k)
            if len(batch) < self.batch_size:
                break
            yield batch
            remaining = rest

    def __len__(self):
        return len(self.item) // self.batch_size


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    photos, captions = catalogue(seed)
    pairs = PairDataset(photos, captions)
    if fixed:
        loader = DataLoader(pairs, batch_sampler=NoDuplicatesBatchSampler(pairs.item, B,
                                                                         torch.Generator().manual_seed(seed)))
    else:
        loader = DataLoader(pairs, batch_size=B, shuffle=False, drop_last=True)  # streamed in file order
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        for tok, txt in loader:
            if step >= steps:
                break
            img_emb, txt_emb = model(tok, txt)
            logits = model.logit_scale.exp() * img_emb @ txt_emb.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img_emb, "text": txt_emb},
                            logits=logits, batch_size=len(tok))
            optimizer.step()
            step += 1
    session.close()
