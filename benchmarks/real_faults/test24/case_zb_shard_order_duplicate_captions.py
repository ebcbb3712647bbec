"""Batch and candidates: a webdataset-style stream written clip by clip is shuffled per shard plus a small
sample buffer only, so each batch of 64 holds the frames of one or two clips and dozens of rows share a caption.

What the user did: a flamingo-pytorch Perceiver-resampler aligner trained on video frames: each of 64 clips
contributes F = 128 frames (4 fps over 32 s: the clip's patch tokens plus per-frame variation), every frame paired
with the clip's one caption. The samples were written to tar shards in clip order (1024 samples, 8 clips a shard)
and read like a WebDataset pipeline: shard order shuffled (`shardshuffle`), a sample shuffle buffer of 100
(`.shuffle(100)`), batches of 64.

What went wrong and why: shard shuffling permutes whole shards but keeps the samples inside a shard in their
written order, and a 100-sample buffer only mixes the frames of one or two neighbouring clips. A batch of 64 thus
holds 1-2 clips: on average a row shares its caption with ~22 others (and near-identical frames). The InfoNCE
targets only the diagonal, so every other frame of the same clip, paired with the identical caption, is scored as
a negative; identical caption rows cannot be told apart, and the loss cannot go below the mean log of the number of
same-caption rows, 0.75 x ln(64). The webdataset threads report the symptom (batches containing the same data
under a contrastive loss; "many integers close together ... I am doing contrastive learning so diverse batches is
very important"; data "only shuffled in a small interval") and the maintainer's answer: samples are shuffled
within the buffer only, shards keep their order, so the buffer (and `initial`) must be large for mixed batches.

Fix (fixed=True, the maintainer's): a sample shuffle buffer the size of the stream, filled before the first batch,
so every batch draws its 64 rows from all clips (a few same-clip pairs remain by chance: floor 0.13 x ln(64)).

Threads: webdataset/webdataset#293 (one batch may contain the same data under a contrastive loss; a larger
shuffle buffer lowers the repeats); webdataset/webdataset#71 (batches of nearby samples, a problem for contrastive
learning); webdataset/webdataset#62 (the data is only shuffled in a small interval; `initial=` and shard-level
shuffling).

Validation (validate.py, seeds 0/1/2, 100 steps, batch 64, final loss / ln(64)):
  fault: 3.1321 / 3.1693 / 3.2788 -> ratio 0.753 / 0.762 / 0.788 (the duplicate floor of these batches: 0.751)
  fixed: 0.5779 / 0.6631 / 0.6073 -> ratio 0.139 / 0.159 / 0.146

Ground truth: false_negatives.
"""

from __future__ import annotations

import random

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("webdataset/webdataset#293", "webdataset/webdataset#71", "webdataset/webdataset#62")
CAUSE = "false_negatives"
FAMILY = "batch and candidates"

CLIPS, FRAMES = 64, 128  # video clips, frames per clip (every frame paired with the clip's caption)
SHARD = 1024  # samples per tar shard (8 clips), written in clip order
B = 64


def write_shards(seed: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """The dataset as it sits on disk: shards of (frame tokens, caption) samples, clip after clip."""
    tokens, texts = token_pairs(CLIPS, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    samples = [(tokens[c] + 0.3 * torch.randn(tokens[c].shape, generator=g), texts[c])
               for c in range(CLIPS) for _ in range(FRAMES)]
    return [samples[i:i + SHARD] for i in range(0, len(samples), SHARD)]


def shuffled(stream, bufsize: int, rng: random.Random):
    """A WebDataset-style sample shuffle: fill a buffer of `bufsize` samples (`initial` = `bufsize`), then yield a
    random buffered sample for each new one read, then drain the buffer."""
    buf = []
    for sample in stream:
        buf.append(sample)
        if len(buf) >= bufsize:
            yield buf.pop(rng.randrange(len(buf)))
    while buf:
        yield buf.pop(rng.randrange(len(buf)))


def batches(shards, bufsize: int, rng: random.Random):
    order = list(range(len(shards)))
    rng.shuffle(order)  # shardshuffle=True: the shard order is random ...
    stream = (s for i in order for s in shards[i])  # ... the samples inside a shard are read in order
    batch = []
    for sample in shuffled(stream, bufsize, rng):
        batch.append(sample)
        if len(batch) == B:
            yield torch.stack([t for t, _ in batch]), torch.stack([c for _, c in batch])
            batch = []


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    shards = write_shards(seed)
    n = sum(len(s) for s in shards)
    bufsize = n if fixed else 100  # .shuffle(100) vs a buffer over the whole stream
    rng = random.Random(seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:  # epochs
        for tok, txt in batches(shards, bufsize, rng):
            img, cap = model(tok, txt)
            logits = model.logit_scale.exp() * img @ cap.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": cap}, logits=logits,
                            batch_size=len(img), inputs=tok)
            optimizer.step()
            step += 1
            if step == steps:
                break
    session.close()
