"""A CLIP fine-tune whose loop calls `optimizer.zero_grad()` between `loss.backward()` and `optimizer.step()`.

What the user did: trained a (small, randomly initialised: width 64) transformers `CLIPModel` on image-caption pairs with
AdamW and a warm-up + cosine learning-rate schedule, stepping the schedule every batch. Their per-batch code was
the one posted in the thread:

    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    lr_scheduler.step()          # (the thread wraps this one in pytorch_warmup's dampening())

and they asked why the learning rate "doesn't have a warm up process" / nothing improves.

What went wrong and why: `zero_grad()` runs after the backward pass and before the step, so every gradient the
backward just produced is wiped (since torch 2.0 it sets `.grad` to None) before the optimizer reads it. AdamW
skips every parameter whose gradient is None: no parameter ever changes, the model stays at its initialisation and
the contrastive loss stays where it started (above ln(B): the random init with CLIP's logit scale 2.6592 is
confidently wrong). The schedule itself is fine; the lr it sets is simply never applied to any gradient.

Thread: Tony-Y/pytorch_warmup#12 ("Why did my learning rate drop from the initial lr"): the maintainer's answer:
"Your code does not optimize model parameters at all because `optimizer.zero_grad()` is called after
`loss.backward()`", pointing to the PyTorch optimization tutorial.

Fix (fixed=True): the usual order, `optimizer.zero_grad()` before `loss.backward()`, then `optimizer.step()`.

Validation (benchmarks/real_faults/validate.py, stand-in watch, 100 steps, B=32, ln(B)=3.4657), final loss / ln(B):
    seed 0: fault 1.2248, fixed 0.3210
    seed 1: fault 1.1008, fixed 0.1658
    seed 2: fault 1.2439, fixed 0.1815

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("Tony-Y/pytorch_warmup#12",)
CAUSE = "no_gradient_path"
FAMILY = "optimizer setup"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    pixels, input_ids = image_caption_pairs(2048, seed=seed)
    model = tiny_clip(seed=seed, width=64)
    model.train()

    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    warmup = 10

    def warmup_cosine(step):  # linear warm-up, then cosine decay over the run
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
        loss = out.loss

        if fixed:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        else:
            loss.backward()
            optimizer.zero_grad()  # the thread's order: wipes the gradients the step was about to use
            optimizer.step()
        lr_scheduler.step()

        session.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B)
    session.close()
