"""Gradient accumulation: the loss reported each iteration is the one already divided by the accumulation count.

What the user did: trained a small CLIP (transformers CLIPModel from a tiny config, random weights) on image-caption
pairs with gradient accumulation (4 micro-batches of 32 per optimizer step). As in the usual recipe they divided the
micro-batch loss by the accumulation count before `backward()`, and then registered that same tensor as the
iteration's training loss in their logger (and in the watch).

What went wrong and why: the reported value is the scaled contribution of one micro-batch to the step's gradient,
not the contrastive objective: every logged point is 1/4 of the micro-batch's real InfoNCE loss, so the curve
starts at ln(32)/4 instead of ln(32), the training loss cannot be compared with the validation loss (which is not
divided) or with runs at another accumulation count, and a run that had stalled at chance would still read as a
loss of ~0.87. The optimisation itself is right; only the record misstates it.

Threads: espnet/espnet#5090 ("the loss value of the training dataset is divided by the number of accumulation steps
before it is reported"; the maintainers agreed to report before the division) and PrimeIntellect-ai/prime-rl#909
("we reported the scaled micro step loss" -> "we report the unscaled micro step loss, which matches the batch loss
scale").

Fix (fixed=True): divide only the tensor that is back-propagated; report the unscaled micro-batch loss.

Validation (validate.py --half test21, 100 optimizer steps x 4 micro-batches of 32, ln(32) = 3.466), final logged
loss / ln(32): the fault's logged loss is exactly 1/4 of the objective it trains (the fixed run's, same seed):
  seed 0: fault 0.1375 (0.040), fixed 0.5500 (0.159)
  seed 1: fault 0.1272 (0.037), fixed 0.5087 (0.147)
  seed 2: fault 0.0885 (0.026), fixed 0.3541 (0.102)
The objective itself learns in both runs; the fault is the logged value, 4x too small from the first step (first
logged point 1.137 / 1.003 / 0.942 against a real first loss of 4.548 / 4.012 / 3.767).

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("espnet/espnet#5090", "PrimeIntellect-ai/prime-rl#909")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

ACCUM = 4
B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(2048, seed=seed)
    model = tiny_clip(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    it = 0
    for step in range(steps):
        optimizer.zero_grad()
        for micro in range(ACCUM):
            idx = torch.randint(0, len(pixels), (B,), generator=g)
            out = model(input_ids=ids[idx], pixel_values=pixels[idx])
            img, txt = out.image_embeds, out.text_embeds          # unit rows
            logits = out.logits_per_image
            loss = clip_loss(logits)
            scaled = loss / ACCUM
            scaled.backward()
            reported = loss.detach() if fixed else scaled.detach()   # what goes to the logger
            session.observe(it, losses={"clip": reported}, embeddings={"image": img, "text": txt},
                            logits=logits, batch_size=B, inputs=pixels[idx])
            it += 1
        optimizer.step()
    session.close()
