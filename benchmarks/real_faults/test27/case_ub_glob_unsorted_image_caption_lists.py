"""Images and captions are listed with two separate `glob` calls that are never sorted, and paired by
position: the i-th image gets whatever caption file the directory listing happens to return i-th.

What the user did: fine-tuned a (tiny, randomly initialised) transformers CLIPModel on an exported
dataset: one directory with `<id>.npy` (the preprocessed image) and `<id>.txt` (its caption) per sample,
written by the export job. The loading code does what the thread's tfrecord generator does:
`addrs_image = glob(dir + "*.npy")`, `addrs_label = glob(dir + "*.txt")`, then
`zip(addrs_image, addrs_label)`.

What went wrong and why: `glob` returns files in the order the filesystem lists the directory (hash
order on ext4, creation order elsewhere), which is neither sorted nor the same for the two extensions:
the thread printed `addrs_image[0]` and `addrs_label[0]` and got two different ids. Every image is
therefore paired with the caption of some other sample, a fixed random permutation: the captions carry
no information about their images, the contrastive loss has nothing to align and stays at ln(B), and
the permutation is too large to memorise in a few epochs.

Thread: A-bone1/FSNS-tfrecord-generate#3 ("correspondence mis-match"): "the python file should read
(image.jpg, text.txt) as a pair, but it seems that the python program does not care about it ...
`print(addrs_image[0], addrs_label[0])` showed two mis-matched file names"; the fix suggested there:
sort both lists (`addrs_label.sort(); addrs_image.sort()`) before pairing.

Fix (fixed=True): `sorted(glob(...))` for both lists, so the i-th image and the i-th caption share an id.

Validation (validate.py, 100 steps, batch 32, final loss = mean of the last 5 / ln(32) = 3.4657):
  fault: seed 0 3.3936 (0.979), seed 1 3.4051 (0.983), seed 2 3.3553 (0.968)
  fixed: seed 0 1.0330 (0.298), seed 1 0.8858 (0.256), seed 2 1.1308 (0.326)
  (the unsorted listings paired 2 of 1024 files with their own caption here on ext4, 1 of 1024 on tmpfs)

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

import numpy as np
import torch

from common import VOCAB, image_caption_pairs, tiny_clip

THREADS = ("A-bone1/FSNS-tfrecord-generate#3",)
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

BATCH = 32
N = 1024


def _export(root: str, seed: int) -> None:
    """The export job: one `<id>.npy` image and one `<id>.txt` caption per sample; images and captions
    are written by two workers, each in its own order."""
    pixels, ids = image_caption_pairs(N, seed=seed)
    rng = np.random.default_rng(seed)
    names = [f"{x:032x}" for x in rng.integers(0, 2**62, size=N)]
    for i in rng.permutation(N):
        np.save(os.path.join(root, names[i] + ".npy"), pixels[i].numpy())
    for i in rng.permutation(N):
        words = " ".join(f"w{int(t)}" for t in ids[i, :-1])  # the caption; EOS is added by the tokenizer
        with open(os.path.join(root, names[i] + ".txt"), "w") as f:
            f.write(words + "\n")


def _tokenize(text: str) -> torch.Tensor:
    toks = [int(w[1:]) for w in text.split()]
    return torch.tensor(toks + [VOCAB - 1])


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    root = tempfile.mkdtemp(prefix="fsns_export_")
    try:
        _export(root, seed)

        # the loader: two listings, paired by position
        addrs_image = glob.glob(os.path.join(root, "*.npy"))
        addrs_label = glob.glob(os.path.join(root, "*.txt"))
        if fixed:
            addrs_image.sort()
            addrs_label.sort()
        pixels = torch.stack([torch.from_numpy(np.load(p)) for p in addrs_image])
        captions = []
        for p in addrs_label:
            with open(p) as f:
                captions.append(_tokenize(f.read()))
        input_ids = torch.stack(captions)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    model = tiny_clip(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=BATCH)
    for step in range(steps):
        idx = torch.randperm(N, generator=g)[:BATCH]
        out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
        optimizer.zero_grad()
        out.loss.backward()
        session.observe(step, losses={"clip": out.loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=BATCH)
        optimizer.step()
    session.close()
