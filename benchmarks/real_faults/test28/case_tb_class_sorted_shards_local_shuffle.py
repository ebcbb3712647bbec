"""A perceiver-pytorch aligner trained on image-caption pairs made from a labelled image set: every caption is a
class-name template ("a photo of a {class}", ...), and the pairs were written to shards class by class (one shard per
class, the order an ImageFolder walk gives). The user streams the shards with a buffered shuffle, as
`IterableDataset.shuffle(buffer_size=...)` / webdataset `.shuffle(n)` do: shard order shuffled, samples read one
shard after another into a 48-sample buffer (smaller than a 64-sample shard), a random buffer slot emitted.

What goes wrong: a buffer fed from one shard at a time only ever holds the tail of the previous class and the head
of the current one, so each batch of 32 holds ~4 classes, one of them ~19 times. Those copies share one caption
(up to the template), so the contrastive loss scores each row's positive against many identical captions labelled
negative: those rows cannot go below ln(number of copies) and the gradient pushes matching pairs apart. The loss
hovers at 0.8-1.0 x ln(32) and does not fall.

Threads: huggingface/datasets#8015 ("lack of proper shard-level randomization when streaming ... shards, which
leads to correlated batches when shards have different data distributions"), fixed by huggingface/datasets#8194
("Use multiple input shards for shuffle buffer"), and NVIDIA/DALI#6491 (a buffer shuffle is local: "This matters
when the samples are stored in a meaningful order, for example sorted by label").

Fix (fixed=True): the buffer is fed from many shards at once (here all 32, round-robin; datasets#8194's
`max_buffer_input_shards`), so a batch holds ~22 classes and a caption rarely repeats in it.

Validation (validate.py, seeds 0/1/2, 100 steps, ln(32) = 3.466; final CLIP loss / ln(B)): fault 3.580 / 3.137 /
2.770 (ratio 1.033 / 0.905 / 0.799); fixed 0.634 / 0.589 / 0.625 (ratio 0.183 / 0.170 / 0.180).

Ground truth: false_negatives.
"""

from __future__ import annotations

import random

import torch

from common import D, DT, T, PerceiverAligner, clip_loss

THREADS = ("huggingface/datasets#8015", "huggingface/datasets#8194", "NVIDIA/DALI#6491")
CAUSE = "false_negatives"
FAMILY = "batch and candidates"

B = 32
CLASSES = 32  # one shard per class, as an ImageFolder-ordered conversion writes them
PER_CLASS = 64  # samples per shard
BUFFER = 48  # shuffle-buffer size (smaller than a shard, as a 1000-sample buffer is next to 10k-sample shards)
TEMPLATES = ("a photo of a {}", "an image of a {}", "a picture of the {}", "{}")


def make_shards(seed: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """A labelled image set turned into image-caption pairs: patch tokens from a class concept plus per-image
    variation; the caption is a class-name template (its text feature: class name + a small template term)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, 8, generator=g)
    to_tokens = torch.randn(8, D, generator=g)
    name_emb = torch.randn(CLASSES, DT, generator=g)
    template_emb = 0.1 * torch.randn(len(TEMPLATES), DT, generator=g)
    shards = []
    for c in range(CLASSES):
        concept = centers[c] + 0.3 * torch.randn(PER_CLASS, 8, generator=g)
        tokens = (concept @ to_tokens).unsqueeze(1) + 0.5 * torch.randn(PER_CLASS, T, D, generator=g)
        tmpl = torch.randint(len(TEMPLATES), (PER_CLASS,), generator=g)
        texts = name_emb[c] + template_emb[tmpl]
        shards.append([(tokens[i], texts[i]) for i in range(PER_CLASS)])
    return shards


def stream(shards, rng: random.Random, buffer_size: int, input_shards: int):
    """Streaming shuffle as in `IterableDataset.shuffle(buffer_size=...)`: the shard order is shuffled, samples
    are read from `input_shards` shards at a time (round-robin) into a buffer, a random buffer slot is emitted."""
    order = list(range(len(shards)))
    rng.shuffle(order)
    buf = []
    for start in range(0, len(order), input_shards):
        open_shards = [iter(shards[s]) for s in order[start:start + input_shards]]
        while open_shards:
            for it in list(open_shards):
                ex = next(it, None)
                if ex is None:
                    open_shards.remove(it)
                    continue
                if len(buf) < buffer_size:
                    buf.append(ex)
                else:
                    j = rng.randrange(buffer_size)
                    yield buf[j]
                    buf[j] = ex
    rng.shuffle(buf)
    yield from buf


def batches(shards, rng, buffer_size, input_shards):
    while True:  # epochs
        batch = []
        for ex in stream(shards, rng, buffer_size, input_shards):
            batch.append(ex)
            if len(batch) == B:
                yield torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
                batch = []


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    shards = make_shards(seed)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    session = watch(model, optimizer, batch_size=B)
    # datasets#8194: feed the buffer from many shards at once (here all of them) instead of one after another
    loader = batches(shards, random.Random(seed), BUFFER, input_shards=CLASSES if fixed else 1)
    for step in range(steps):
        tokens, texts = next(loader)
        img, txt = model(tokens, texts)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                        logits=logits, batch_size=B, inputs=tokens)
        optimizer.step()
    session.close()
