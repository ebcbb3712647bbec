"""Locked-image tuning with a cache of frozen vision features that was filled by a shuffling DataLoader: the cached
features come out in the loader's random order, but are stored and later paired with the captions by position.

What the user did: a transformers CLIPModel (tiny config, random weights) trained LiT-style: the vision tower is
frozen, so to save compute its pooled features are computed once for the whole image set and cached; training then
updates the visual projection, the text tower and the temperature on (cache[i], captions[i]). The extraction pass
reused the training loader settings, `DataLoader(images, batch_size=256, shuffle=True)`, and appended the outputs
batch after batch into the cache. The CLIP loss falls from 1.2 ln(64) to ln(64) in a few steps and stays there, to
the third decimal.

Why: with shuffle=True the extraction loader visits the images in a random permutation, so cache[i] holds the
features of image perm[i], not of image i. Pairing cache[i] with captions[i] pairs every caption with a random
image: the pairs share no signal, and the contrastive loss can do no better than chance (the fresh shuffle of the
training loader afterwards keeps the pairs, wrong as they are). Nothing errors: shapes, dtypes and counts are all
right, only the correspondence is gone.

Thread: fastai/courses#81 ("batches shuffle must be set to False when pre-computing features": the course notebook
pre-computed the convolutional features with a shuffling batch iterator, which "breaks the connection between the
conv_feat to their respected labels"; merged fix: `shuffle=False` for the extraction pass).

Fix (fixed=True): extract the cache with `shuffle=False` (equivalently, carry the indices through the pass and
scatter the features back into place).

Validation (validate.py, seeds 0/1/2, 100 steps, B = 64, final CLIP loss / ln(64)):
fault 1.000 / 1.000 / 1.000, fixed 0.400 / 0.339 / 0.415.

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("fastai/courses#81",)
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

N, BATCH = 4096, 64


@torch.no_grad()
def cache_vision_features(model, pixels: torch.Tensor, shuffle: bool, seed: int) -> torch.Tensor:
    """One pass of the frozen vision tower over the image set; outputs appended in loader order."""
    loader = DataLoader(TensorDataset(pixels), batch_size=256, shuffle=shuffle,
                        generator=torch.Generator().manual_seed(seed))
    feats = []
    for (x,) in loader:
        feats.append(model.vision_model(pixel_values=x).pooler_output)
    return torch.cat(feats)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, captions = image_caption_pairs(N, seed=seed)
    model = tiny_clip(seed)
    model.vision_model.requires_grad_(False)  # locked image tower
    model.vision_model.eval()

    cache = cache_vision_features(model, pixels, shuffle=not fixed, seed=seed)
    train_set = TensorDataset(cache, captions)
    loader = DataLoader(train_set, batch_size=BATCH, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed + 1))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-3)

    session = watch(model, optimizer, batch_size=BATCH)
    step = 0
    while step < steps:
        for feats, ids in loader:
            img = F.normalize(model.visual_projection(feats), dim=-1)
            txt = F.normalize(model.text_projection(model.text_model(input_ids=ids).pooler_output), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=len(img), inputs=feats)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step >= steps:
                break
    session.close()
