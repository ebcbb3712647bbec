"""The report files in the checkout are Git LFS pointer stubs, not the reports: every caption the model
sees is "version https://git-lfs.github.com/spec/v1 / oid sha256:<hash> / size <n>".

What the user did: trained a small CLIP (transformers CLIPModel from a tiny config, random weights) on
image-report pairs, reading each study's report from the text file next to it in their repository clone and
tokenising it with a word-level vocabulary built from the training reports (min. frequency 2, unknown words
to UNK), batch 32, symmetric CLIP loss. The repository tracks the reports with Git LFS, and the clone was
made without `git lfs pull`.

What went wrong and why: without the LFS content, every report file holds the three-line LFS pointer. The
loader reads it without complaint, the vocabulary is built from it, and every caption tokenises to the same
six words -- version, the spec URL, oid, the hash (UNK, except for the few reports that occur twice), size,
and the byte count of the real report (22-27): 14 distinct token sequences for 1024 studies (seed 0). The
text tower therefore gets (almost) the same input for every image: nothing in the caption identifies its
image, so no image can be matched to its caption and the loss stays near ln(B). Nothing errors; the code,
the model and the loss are all correct.

Threads: rajpurkarlab/CheXzero#15 ("Training not converging with default settings": NaN/flat loss on
MIMIC reports, "even for 1000 images the loss does not get smaller"; the resolution: "Our Github Repo was set
to use LFS and we had the reports inside the repo, which lead to the contents simply being links to github
LFS. When we actually trained on the proper reports, we had no problems running the code.").

Fix (fixed=True): the checkout has the real report text (`git lfs pull`); same loader, tokenizer, model, loss.

Validation (validate.py --half test26, seeds 0/1/2, ln(32) = 3.4657): fault final / ln(32) = 0.9503 /
0.9349 / 0.9479 (final 3.29 / 3.24 / 3.29); fixed 0.2709 / 0.2473 / 0.2470.

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import Counter

import torch

from common import SEQ, VOCAB, clip_loss, image_caption_pairs, tiny_clip

THREADS = ("rajpurkarlab/CheXzero#15",)
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B = 32
PAD, UNK, EOS = 0, VOCAB - 2, VOCAB - 1


def lfs_pointer(content: str) -> str:
    """What a Git LFS-tracked file contains in a clone made without the LFS objects."""
    data = content.encode()
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n")


def write_checkout(root: str, reports: list[str], lfs_pulled: bool) -> list[str]:
    """The repository clone: one report file per study."""
    paths = []
    for i, report in enumerate(reports):
        path = os.path.join(root, f"study_{i:05d}.txt")
        with open(path, "w") as f:
            f.write(report if lfs_pulled else lfs_pointer(report))
        paths.append(path)
    return paths


class WordTokenizer:
    """Word-level vocabulary fitted on the training reports (the text tower is trained from scratch)."""

    def __init__(self, corpus: list[str], min_freq: int = 2):
        counts = Counter(w for text in corpus for w in text.split())
        words = [w for w, c in counts.most_common() if c >= min_freq][: VOCAB - 3]
        self.ids = {w: i + 1 for i, w in enumerate(words)}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.full((len(texts), SEQ), PAD, dtype=torch.long)
        for r, text in enumerate(texts):
            ids = [self.ids.get(w, UNK) for w in text.split()][: SEQ - 1] + [EOS]
            out[r, : len(ids)] = torch.tensor(ids)
        return out


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pixels, words = image_caption_pairs(1024, seed)
    reports = [" ".join(f"w{t}" for t in row[:-1].tolist()) for row in words]  # the radiology reports

    with tempfile.TemporaryDirectory() as root:
        paths = write_checkout(root, reports, lfs_pulled=fixed)
        texts = []
        for path in paths:  # the user's dataset: read each study's report file
            with open(path) as f:
                texts.append(f.read())
    tokenizer = WordTokenizer(texts)
    input_ids = tokenizer(texts)

    model = tiny_clip(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed + 1)
    session = watch(model, optimizer, batch_size=B)

    for step in range(steps):
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        out = model(input_ids=input_ids[idx], pixel_values=pixels[idx])
        logits = out.logits_per_image
        loss = clip_loss(logits)

        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=logits, batch_size=B, inputs=pixels[idx])
        optimizer.step()
    session.close()
