"""A Hugging Face warm-up schedule sized in optimizer steps, stepped once per epoch.

What the user did: fine-tuned a small CLIP (transformers `CLIPModel`, image-caption pairs, the model's
own `return_loss=True` contrastive loss) with AdamW and `transformers.get_cosine_schedule_with_warmup`,
sized the way the HF examples size it: `num_training_steps = epochs * len(loader)` and 10% of that as
warm-up, i.e. both counted in optimizer steps. Their loop calls `scheduler.step()` once per epoch, after
the inner batch loop (the habit from epoch-based torch schedulers; in the thread it came from PyTorch
Lightning's default `interval="epoch"`).

What went wrong: the loss sits at ln(B) for the whole run. `get_*_schedule_with_warmup` is a `LambdaLR`
whose factor at step 0 is 0/warmup = 0, so the whole first epoch trains at lr = 0; after one epoch the
schedule has advanced one *step*, so the second epoch runs at 1/warm-up of the peak (here 1/12). The
warm-up that should take 12 batches takes 12 epochs; the run ends before the learning rate ever arrives.

Threads: huggingface/transformers#20916 ("Learning rate is set to zero for the entirety of the first
epoch": the HF schedulers are defined in steps, the user's trainer stepped them per epoch; the reporter
traced it to the mismatch and the fix is to step the scheduler every optimizer step, `interval="step"`);
the same report on the forum, discuss.huggingface.co/t/huggingface-lr-decay-schedulers-spend-the-first-
epoch-w-an-lr-of-0/28195.

Fix (fixed=True): call `scheduler.step()` after every `optimizer.step()`, inside the batch loop.

Validation (validate.py, 100 steps, B=32, ln(B)=3.4657; final = mean of the last 5 losses / ln(B)):
    seed 0: fault 0.9999, fixed 0.2808
    seed 1: fault 0.9563, fixed 0.1304
    seed 2: fault 0.9769, fixed 0.1693

Ground truth: lr_schedule.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import image_caption_pairs, tiny_clip

THREADS = ("huggingface/transformers#20916",)
CAUSE = "lr_schedule"
FAMILY = "schedules"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    B = 32
    model = tiny_clip(seed, width=64)
    pixels, input_ids = image_caption_pairs(2048, seed)
    loader = DataLoader(TensorDataset(pixels, input_ids), batch_size=B, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))

    epochs = math.ceil(steps / len(loader))
    num_training_steps = epochs * len(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=int(0.1 * num_training_steps),
                                                num_training_steps=num_training_steps)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    model.train()
    for epoch in range(epochs):
        for pix, ids in loader:
            if step >= steps:
                break
            out = model(input_ids=ids, pixel_values=pix, return_loss=True)
            loss = out.loss
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=out.logits_per_image, batch_size=B, inputs=pix)
            optimizer.step()
            if fixed:
                scheduler.step()  # the HF schedule counts optimizer steps
            step += 1
        if not fixed:
            scheduler.step()  # once per epoch: the warm-up never finishes
    session.close()
