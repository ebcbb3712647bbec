"""Image and caption streams built as two branches of one shuffled id stream: each branch re-runs the shuffle.

What the user did: to avoid loading every image into memory, the user shuffles only the cheap list of sample
ids, then builds the image branch (`ids -> load patch tokens -> batch`) and the caption branch (`ids -> load
text features -> batch`) separately from that same shuffled id pipeline, and zips the two branches to get
(image, caption) batches. A flamingo-pytorch PerceiverResampler aligner is trained on them with the symmetric
CLIP loss (AdamW, lr 1e-3, batch 32).

What went wrong and why: a lazily evaluated pipeline is a blueprint, not a list. Zipping two branches iterates
the shuffled source once per branch, and a shuffle that reshuffles on each iteration draws a different
permutation for each of them. Image i of a batch is therefore paired with the caption of an unrelated sample;
the pairing changes every epoch, there is no shared signal between the two sides, and the contrastive loss sits
at ln(B) while the model only learns to stay at chance. The exact TensorFlow report: the user "moved shuffling
up to just the filenames" and zipped `transformed` with `labels` and "just got bit by this"
(tensorflow/tensorflow#70521); the maintainer's explanation in tensorflow/tensorflow#41334: datasets "work like
blueprints, where the data is computed on the fly every time you iterate", "`Dataset.zip` ... iterates through
them in parallel. If you want to iterate through the input just once, use `map` instead of `zip`" (fixed by a
documentation PR that adds "shuffle after zipping to keep pairs aligned"). The same pipeline written with
PyTorch IterableDatasets (below) behaves the same way.

Fix (fixed=True): load both sides in one map over the shuffled ids (shuffle the pair, not the branches), so
each batch holds matching image and caption.

Validation (validate.py, 100 steps, B=32, ln(B)=3.466): final loss / ln(B)
  fault: seed 0 0.9995, seed 1 0.9975, seed 2 0.9965 (final loss 3.464, 3.457, 3.454)
  fixed: seed 0 0.0170, seed 1 0.0199, seed 2 0.0175 (final loss 0.059, 0.069, 0.061)

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("tensorflow/tensorflow#70521", "tensorflow/tensorflow#41334")
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B = 32
N = 2048


class ShuffledIds(IterableDataset):
    """The sample ids in a new random order on every pass (a shuffle that reshuffles each iteration)."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.g = torch.Generator().manual_seed(seed)

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.g).tolist())


class Map(IterableDataset):
    def __init__(self, source, fn):
        self.source, self.fn = source, fn

    def __iter__(self):
        return (self.fn(i) for i in self.source)


class Batch(IterableDataset):
    def __init__(self, source, size: int):
        self.source, self.size = source, size

    def __iter__(self):
        buf = []
        for item in self.source:
            buf.append(item)
            if len(buf) == self.size:
                yield collate(buf)
                buf = []


def collate(items):
    if isinstance(items[0], tuple):
        return tuple(torch.stack(col) for col in zip(*items))
    return torch.stack(items)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(N, seed=seed)
    load_image = lambda i: tokens[i]  # stands for reading + preprocessing one image's patch tokens
    load_caption = lambda i: texts[i]  # stands for reading + encoding one caption

    ids = ShuffledIds(N, seed)  # only the ids are shuffled: cheap, nothing loaded yet
    if fixed:
        pairs = Batch(Map(ids, lambda i: (load_image(i), load_caption(i))), B)
    else:
        images = Batch(Map(ids, load_image), B)
        captions = Batch(Map(ids, load_caption), B)

    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        epoch = iter(pairs) if fixed else zip(images, captions)
        for tok, txt in epoch:
            img_emb, txt_emb = model(tok, txt)
            logits = model.logit_scale.exp() * img_emb @ txt_emb.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img_emb, "text": txt_emb},
                            logits=logits)
            optimizer.step()
            step += 1
            if step >= steps:
                break
    session.close()
