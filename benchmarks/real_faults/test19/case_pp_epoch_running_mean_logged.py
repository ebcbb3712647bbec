"""The per-step training loss that is logged is the running mean since the start of the epoch, not the loss of the
step: the curve lags far behind the objective and reads as a run that barely learns.

What the user did: fine-tuned a transformers CLIPModel (tiny config, random weights) with its built-in contrastive
loss (`return_loss=True`) on 8192 image-caption pairs, batch 64, so one epoch is 128 optimizer steps. Their loop
keeps `running_loss += loss.item()` and writes `running_loss / (i + 1)` to the logger every step as "the loss"
(the value they also hand to the monitor). After 100 steps the logged loss has crept from 1.3 to ~0.65 ln(64),
and they conclude the alignment is barely learning.

Why: the logged value is the average of every batch loss since the epoch began, so at step i it still carries the
chance-level losses of the first steps with weight 1/(i+1). While the model's own loss on the step's batch has
fallen to ~0.35 ln(64) (the logits of the logged step give that), the logged number is about twice it, and each new
epoch would make it jump when the sum resets. The objective is fine; the logged series misstates it.

Thread: allenai/allennlp#4354 ("Reported loss is confusing": "The loss we write into tensorboard is the average loss
over the epoch. So the first number we get is not averaged at all, while the last number in the epoch is averaged
over the entire epoch ... We want to log the actual loss of each individual batch, not the sum of the losses";
labelled bug, the maintainers decided to log the batch loss beside the epoch average).

Fix (fixed=True): log the step's own loss (keep the running mean only as an epoch summary).

Validation (validate.py, seeds 0/1/2, 100 steps, B = 64, final logged loss / ln(64)): fault (running mean)
0.706 / 0.604 / 0.678, fixed (the step's loss, the same training run) 0.386 / 0.308 / 0.360: the logged loss is
1.8-2.0x the objective at the end of the fault runs.

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import image_caption_pairs, tiny_clip

THREADS = ("allenai/allennlp#4354",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

N, BATCH = 8192, 64  # 128 steps per epoch


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, captions = image_caption_pairs(N, seed=seed)
    loader = DataLoader(TensorDataset(pixels, captions), batch_size=BATCH, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    model = tiny_clip(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)

    session = watch(model, optimizer, batch_size=BATCH)
    step = 0
    while step < steps:
        running_loss = 0.0  # reset each epoch
        for i, (x, ids) in enumerate(loader):
            out = model(input_ids=ids, pixel_values=x, return_loss=True)
            out.loss.backward()
            running_loss += out.loss.item()
            logged = out.loss if fixed else running_loss / (i + 1)
            session.observe(step, losses={"clip": logged},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=out.logits_per_image, batch_size=len(x))
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step >= steps:
                break
    session.close()
