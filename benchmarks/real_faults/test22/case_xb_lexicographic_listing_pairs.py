"""Image-caption pairs built by zipping a `sorted(os.listdir())` of the image folder with a caption file in id
order: string sorting puts "10.npy" before "2.npy", so almost every image is paired with another image's caption and
the contrastive loss stays at ln(B).

What the user did: precomputed frozen-backbone patch tokens, one file per image named by its integer id
(`0.npy ... 2047.npy`, not zero-padded), and the pooled caption features in one array whose row i is the caption
of image i. The dataset lists the folder with `sorted(os.listdir(folder))`, loads the files in that order and pairs
the k-th file with row k of the caption array. Model: a perceiver-pytorch Perceiver aligner (latent
cross-attention over the patch tokens, mean over latents, projection; text MLP), symmetric CLIP loss, AdamW.

What went wrong and why: `sorted()` on file names is a string sort, so the listing is 0, 1, 10, 100, 1000, 1001,
..., 1009, 101, 1010, ...: of the 2048 files only file 0 and file 1 land at their own row, every other image gets
the caption of an unrelated id. The pairs carry no shared signal, so nothing generalises from one batch to the next:
the loss falls from its initial value (above ln(64), the temperature starts at 1/0.07) to ln(64) and stays there to
the last step. The threads: "Sorting using sorted() is causing problems due to lexographic sorting, this is not what a
normal OS does, leading to mismatch between labels and data" (deepchem/deepchem#3695, merged change to the image
loader); a turicreate user's annotations were written "in increasing numbers order of naming" while `load_images`
returned the images in another order, so the annotation column no longer belonged to the image beside it
(apple/turicreate#125, labelled bug).

Fix (fixed=True): order the files by their integer id (`key=lambda f: int(f.split(".")[0])`), so file k is image k
and row k is its caption.

Validation (validate.py, 100 steps, batch 64, ln 64 = 4.159; final / ln(64), seeds 0, 1, 2):
    fault 0.9923 / 0.9973 / 0.9940 (final 4.127 / 4.147 / 4.134)
    fixed 0.0405 / 0.0414 / 0.0341 (final 0.169 / 0.172 / 0.142)

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("deepchem/deepchem#3695", "apple/turicreate#125")
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

N_IMAGES = 2048
BATCH = 64


def write_dataset(root: str, seed: int) -> None:
    """The dataset as it sits on disk: one patch-token file per image, named by id; captions in id order."""
    tokens, texts = token_pairs(N_IMAGES, seed=seed)
    os.makedirs(os.path.join(root, "patches"))
    for i in range(N_IMAGES):
        np.save(os.path.join(root, "patches", f"{i}.npy"), tokens[i].numpy())
    np.save(os.path.join(root, "captions.npy"), texts.numpy())


def load_pairs(root: str, fixed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    folder = os.path.join(root, "patches")
    if fixed:
        files = sorted(os.listdir(folder), key=lambda f: int(f.split(".")[0]))  # numeric id order
    else:
        files = sorted(os.listdir(folder))  # string order: 0, 1, 10, 100, 1000, ...
    images = torch.from_numpy(np.stack([np.load(os.path.join(folder, f)) for f in files]))
    captions = torch.from_numpy(np.load(os.path.join(root, "captions.npy")))  # row i: caption of image i
    return images, captions


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    with tempfile.TemporaryDirectory() as root:
        write_dataset(root, seed)
        images, captions = load_pairs(root, fixed)

    torch.manual_seed(seed)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(N_IMAGES, generator=g), 0

    session = watch(model, optimizer, batch_size=BATCH)
    for step in range(steps):
        if pos + BATCH > N_IMAGES:
            perm, pos = torch.randperm(N_IMAGES, generator=g), 0
        idx = perm[pos:pos + BATCH]
        pos += BATCH
        tokens, texts = images[idx], captions[idx]
        img, txt = model(tokens, texts)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=BATCH, inputs=tokens)
        optimizer.step()
    session.close()
