"""Images and captions come from two separately shuffled DataLoaders zipped together: every batch pairs each
image with a random caption, so there is no pair structure to learn and the CLIP loss stays at ln(B).

What the user did: a transformers CLIPModel (tiny config, random weights) trained from scratch on image/caption
pairs. The preprocessing wrote the pixels and the token ids to two arrays in the same order, so the pairing is
encoded by position only. The training loop builds one Dataset per array and one DataLoader per Dataset, both
with `shuffle=True`, and iterates `zip(image_loader, caption_loader)`; each step calls
`model(input_ids=..., pixel_values=..., return_loss=True)`.

What went wrong and why: each DataLoader draws its own random permutation, so row i of the image batch and row i
of the caption batch come from different pairs. The diagonal the CLIP loss treats as the positives is a random
image-caption matching on every step; no function of the image predicts its "caption", the embeddings can only
spread or shrink the logits, and the loss sits at ln(32) while both towers keep changing.
zhengyanzhao1997/NLP-model#4: a contrastive (SimCSE) model whose loss "would not go down" on the user's data;
the maintainer asked whether every sample has its unique positive at the expected position, and the user found
that the pairs were constructed correctly but the shuffle scrambled their order (translated: "the construction is fine,
but the shuffle scrambled the order, I need to redo the preprocessing"). RaphaelMeudec/deblur-gan#31 (fixed in #33):
the paired blur/sharp images were loaded in arbitrary, independent orders, "because of which the loss was not
converging"; loading them as pairs made it converge.

The fix: one Dataset that returns the (pixels, token ids) pair of an index, one shuffled DataLoader, so the
shuffle permutes pairs instead of each side separately.

Validation (validate.py, 100 steps, B = 32, chance ln(32) = 3.466; final loss / ln(32)):
  fault  seed 0: 3.4688 / 1.0009   seed 1: 3.4654 / 0.9999   seed 2: 3.4686 / 1.0008
  fixed  seed 0: 1.0990 / 0.3171   seed 1: 0.8483 / 0.2448   seed 2: 0.9638 / 0.2781

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import image_caption_pairs, tiny_clip

THREADS = ("zhengyanzhao1997/NLP-model#4", "RaphaelMeudec/deblur-gan#31")
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, input_ids = image_caption_pairs(1024, seed=seed)  # same order: row i of each is pair i
    model = tiny_clip(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    if fixed:
        pair_loader = DataLoader(TensorDataset(pixels, input_ids), batch_size=B, shuffle=True, drop_last=True,
                                 generator=gen)
    else:
        image_loader = DataLoader(TensorDataset(pixels), batch_size=B, shuffle=True, drop_last=True, generator=gen)
        caption_loader = DataLoader(TensorDataset(input_ids), batch_size=B, shuffle=True, drop_last=True,
                                    generator=gen)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        batches = pair_loader if fixed else ((px, ids) for (px,), (ids,) in zip(image_loader, caption_loader))
        for px, ids in batches:
            if step >= steps:
                break
            out = model(input_ids=ids, pixel_values=px, return_loss=True)
            optimizer.zero_grad()
            out.loss.backward()
            session.observe(step, losses={"clip": out.loss},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=out.logits_per_image, batch_size=len(px))
            optimizer.step()
            step += 1
    session.close()
