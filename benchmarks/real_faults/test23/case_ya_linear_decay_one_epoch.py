"""A tiny CLIP whose linear-decay schedule was sized for one epoch of a multi-epoch run.

What the user did: a plain image-caption loop over a DataLoader for several epochs, AdamW at 2e-3 and the
usual `transformers.get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps)`
stepped after every optimizer step. They set `num_training_steps = len(train_loader)` (the number of
batches, one epoch's worth) instead of batches x epochs. The loss falls for about a dozen steps (5.5 to
about 4.0 on seed 0) and then stops moving for the remaining epochs, just under ln(64) = 4.16.

Why: the linear schedule multiplies the learning rate by max(0, (T - step) / (T - warmup)); with T = 16
(one epoch of 1024 pairs at batch 64) the rate reaches exactly 0 at step 16 and stays 0 for the other 84
steps (the HF schedule clamps at 0, it does not warn). Sixteen steps of a decaying rate are far too few
for this model, so the weights freeze where they are, near chance. Nothing else is wrong: at the same
peak rate a schedule over the whole run learns.

Threads: determined-ai/determined#711 ("if this value [num_training_steps] is too low, we end up with a
LR of zero pretty quickly, and this was causing the learning to basically stop"; the fix sets it to the
number of optimizer steps, batches x epochs, as the HF examples do), huggingface/transformers#5045
(the learning rate "decreases to 0 at the end of the first epoch, even when we want to train on multiple
epochs" because the epochs were left out of the step count).

Fix (fixed=True): num_training_steps = len(train_loader) * num_epochs.

Validation (validate.py --half test23, final loss / ln(64) over the last 5 steps):
  fault  seeds 0/1/2: 0.972 / 0.927 / 0.969 (final 4.043 / 3.854 / 4.028)
  fixed  seeds 0/1/2: 0.387 / 0.233 / 0.300 (final 1.607 / 0.970 / 1.248)

Ground truth: lr_schedule.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import image_caption_pairs, tiny_clip

THREADS = ("determined-ai/determined#711", "huggingface/transformers#5045")
CAUSE = "lr_schedule"
FAMILY = "schedules"

B = 64


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    model = tiny_clip(seed)
    pixels, ids = image_caption_pairs(1024, seed)
    train_loader = DataLoader(TensorDataset(pixels, ids), batch_size=B, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(seed))
    num_epochs = math.ceil(steps / len(train_loader))

    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    num_training_steps = len(train_loader) * num_epochs if fixed else len(train_loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=int(0.1 * num_training_steps),
                                                num_training_steps=num_training_steps)

    session = watch(model, optimizer, batch_size=B)
    model.train()
    step = 0
    for epoch in range(num_epochs):
        for pix, tok in train_loader:
            if step >= steps:
                break
            out = model(input_ids=tok, pixel_values=pix, return_loss=True)
            loss = out.loss
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=out.logits_per_image)
            optimizer.step()
            scheduler.step()
            step += 1
    session.close()
