"""Caption embeddings precomputed in sorted order and "unsorted" with the argsort of the already-sorted
array: the cached text rows no longer belong to the images, and image-caption retrieval trains at chance.

What the user did (facebookresearch/SentEval#19): the ImageCaptionRetrieval task (a ranking model trained on
frozen ResNet image features and frozen sentence embeddings of COCO captions) gave "very poor test scores,
close to random" with both the InferSent and the SkipThought example scripts (InferSent: image to text
R@1 0.08, text to image 0.076), also after reverting torch versions. The maintainer traced it to
a refactoring commit (89b8ae5) of the caption-embedding step and fixed it in e97d861 ("Fixes #19"):

    self.coco_data[key]['sent'] = np.sort(self.coco_data[key]['sent'])      # sort to reduce padding
    idx_sort = np.argsort(self.coco_data[key]['sent'])                      # argsort of the SORTED array
    idx_unsort = np.argsort(idx_sort)
    ... embed the sentences batch by batch in that order, then X = X[idx_unsort]

Why: `np.argsort` of an already sorted array is the identity permutation, so `idx_unsort` is the identity
too and the cached embeddings stay in sorted-caption order while the image features stay in dataset order.
Row i of the text cache is the embedding of some other image's caption: no pair shares a signal, the
contrastive loss can only sit at ln(B) and retrieval at chance, whatever the model or the learning rate.

Fix (the commit): take the permutation before sorting, `sent, idx_sort = np.sort(sent), np.argsort(sent)`,
so that `X[idx_unsort]` restores the dataset order.

Here: frozen patch tokens per image (common.token_pairs) and captions as word strings of varying length
(each caption lists the words its item's text features score highest); the frozen sentence encoder is
SentEval's bag-of-words baseline (mean of fixed word vectors), run once over the captions, batched in sorted
order, into a cache; a flamingo-pytorch PerceiverResampler image tower and a text projection
(common.ResamplerAligner) are trained on (image tokens, cached caption embedding) pairs, AdamW lr 1e-3,
batch 32, 100 steps.

Validation (validate.py, final loss / ln(32), seeds 0 1 2):
    fault: 0.9795, 0.9776, 0.9987 (final 3.39, 3.39, 3.46 against ln 32 = 3.47)
    fixed: 0.2192, 0.2269, 0.2265

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from common import DT, ResamplerAligner, token_pairs

THREADS = ("facebookresearch/SentEval#19",)
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B, VOCAB_W, MAX_LEN = 32, 64, 12


def make_captions(texts: torch.Tensor, seed: int) -> list[str]:
    """Each caption: a variable-length string of words, the words the item's text features score highest
    under a fixed word projection (so a caption names its own image's concepts), most salient first."""
    g = torch.Generator().manual_seed(seed + 100)
    scores = texts @ torch.randn(texts.shape[1], VOCAB_W, generator=g)  # (n, VOCAB_W)
    ranked = scores.argsort(dim=1, descending=True)
    lengths = torch.randint(6, MAX_LEN + 1, (len(texts),), generator=g)
    return [" ".join(f"w{int(w)}" for w in ranked[i, :lengths[i]]) for i in range(len(texts))]


class BowEncoder:
    """SentEval's bag-of-words baseline: the mean of fixed word vectors (frozen, never trained)."""

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed + 200)
        self.vectors = {f"w{v}": torch.randn(DT, generator=g) for v in range(VOCAB_W)}

    def batcher(self, batch) -> np.ndarray:
        return np.stack([torch.stack([self.vectors[w] for w in s.split()]).mean(0).numpy() for s in batch])


def embed_captions(captions: list[str], encoder: BowEncoder, fixed: bool, bsize: int = 128) -> np.ndarray:
    sent = np.array(captions)
    if fixed:
        sent, idx_sort = np.sort(sent), np.argsort(sent)
    else:
        sent = np.sort(sent)           # sort to reduce padding
        idx_sort = np.argsort(sent)    # argsort of the sorted array: the identity
    idx_unsort = np.argsort(idx_sort)
    X = np.vstack([encoder.batcher(sent[i:i + bsize]) for i in range(0, len(sent), bsize)])
    return X[idx_unsort]


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    captions = make_captions(texts, seed)
    cache = torch.tensor(embed_captions(captions, BowEncoder(seed), fixed), dtype=torch.float32)

    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed + 1)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randperm(len(tokens), generator=g)[:B]
        img, txt = model(tokens[idx], cache[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        labels = torch.arange(B)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
