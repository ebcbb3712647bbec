"""ReduceLROnPlateau stepped on every batch loss cuts the learning rate to nothing during CLIP's early plateau.

What the user did: a tiny transformers CLIP (random weights, tiny config) trained contrastively with AdamW at lr 1e-3,
batch 16. To "drop the lr when training stalls" they added `torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer,
"min", patience=2)` and, like the loss they print, fed it every batch: `scheduler.step(loss.item())` inside the
batch loop.

What went wrong and why: ReduceLROnPlateau does not look for a plateau, it looks for a loss that is not below the best
value it has ever seen (pytorch/pytorch#30873: "It actually steps the LR when the loss is not below the best it has
ever achieved ... the LR is repeatedly decimated and it never gets a chance to get back below the lowest point").
Fed single noisy batch losses, the best is one lucky batch from the first drop (3.3-3.7 -> ~2.7); CLIP then sits near
ln(B) for a few dozen steps before the pairs separate, no batch beats that lucky minimum for 3 steps, and the lr is
cut x0.1 (first cut at step 11, 7 and 28 on seeds 0, 1, 2), again 3-8 steps later, and so on: 1e-3 -> 1e-8 by step
29, 24 and 41. The model is frozen near chance for the rest of the run, with a loss curve that looks like a plateau
(which the scheduler then "confirms").

Thread: pytorch/pytorch#30873 (ReduceLROnPlateau detects a plateau during a steady decrease after a spike; "With
the scheduler disabled, it keeps decreasing rapidly").

Fix (the thread's): take the plateau scheduler out of the per-batch loop (disabled here; stepping it once per epoch
on the epoch's mean loss does the same in a 100-step run).

Validation (validate.py, 100 steps, B = 16, ln(B) = 2.7726; final = mean of the last 5 steps):
    seed 0: fault 2.6218 (0.946 ln B), fixed 1.2018 (0.434 ln B)
    seed 1: fault 2.7185 (0.981 ln B), fixed 0.8547 (0.308 ln B)
    seed 2: fault 2.3189 (0.836 ln B), fixed 1.0422 (0.376 ln B)

Ground truth: lr_schedule.
"""

from __future__ import annotations

import torch

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("pytorch/pytorch#30873",)
CAUSE = "lr_schedule"
FAMILY = "schedules"

B = 16


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, captions = image_caption_pairs(1024, seed)
    model = tiny_clip(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # the user's bug: a plateau scheduler fed every batch's loss
    scheduler = None if fixed else torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min", patience=2)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        order = torch.randperm(len(pixels), generator=gen)
        for start in range(0, len(order) - B + 1, B):
            idx = order[start:start + B]
            out = model(input_ids=captions[idx], pixel_values=pixels[idx])
            logits = out.logits_per_image
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=logits, batch_size=B)
            optimizer.step()
            if scheduler is not None:
                scheduler.step(loss.item())
            step += 1
            if step >= steps:
                break
    session.close()
