"""A contrastive batch of two: each caption is scored against one negative, chance is ln 2 = 0.69 and the
gradient says almost nothing about the rest of the data (with one pair the loss is exactly 0).

Thread: openai/CLIP#83 ("when I set BATCH_SIZE = 1, the total_loss is always 0 ... BATCH_SIZE must be
greater than 1"; later comments fine-tune with batches of a few pairs on a small GPU). Here: a
transformers CLIPModel fine-tuned with batch 2.
Ground truth: too_few_negatives.
"""

from __future__ import annotations

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("openai/CLIP#83",)
CAUSE = "too_few_negatives"
FAMILY = "batch_candidates"
BATCH = 2  # BUG: one negative per row


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(seed=seed)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(ids), (BATCH,))
            out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
            opt.zero_grad()
            out.loss.backward()
            w.observe(step, losses={"clip": out.loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
