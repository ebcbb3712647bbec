"""Schedules: `ReduceLROnPlateau(mode="max")` is stepped with the training *loss*: in max mode a falling
loss never counts as an improvement, so the lr is cut by 10x every `patience + 1` epochs from the start
and sits at its floor (1e-3 of the base lr) after 7 epochs, before the model has learned anything.

What the user did: a resampler aligner (flamingo-pytorch PerceiverResampler over frozen-backbone patch
tokens, mean over latents, linear image and text projections, learnable logit scale) trained with a
symmetric CLIP loss, Adam (lr 2e-4), gradient clipping at 10 and a "dynamic" learning rate as in the
gnina-torch training script: `ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=1,
min_lr=base_lr * 0.1**3)`, stepped after every epoch (4 batches of 32 over 128 training pairs) with the
epoch's mean training loss.

What went wrong and why: in "max" mode the scheduler tracks the largest value seen and counts every epoch
whose value is not above it as a bad epoch. The first epoch's loss is the largest the run will see, so
with a decreasing loss every later epoch is "bad": after `patience + 1 = 2` bad epochs the lr is divided by
10 (epochs 3, 5, 7, i.e. steps 12, 20, 28) and from step 28 on it is 2e-7. The first 12 steps at 2e-4 only
take the CLIP loss from its start (3.9-5.4) to about ln(B), and there it stays. RMeli/gnina-torch#57
("LR scheduler mode=max -> mode=min"): gnina-torch's training script stepped its ReduceLROnPlateau with
the training loss in mode="max"; the PR points out that a loss must be plateaued on as it decreases, not
increases, and the maintainer merged the switch to mode="min" as "a simple bugfix".

The fix (the thread's): `mode="min"` for a loss (max is for accuracy-like metrics); the lr is then only
cut when the loss really stops falling.

Validation (benchmarks/real_faults/validate.py, seeds 0/1/2, 100 steps, B = 32, ln(B) = 3.466):
fault final loss 3.5228 / 3.0330 / 3.0011 (ratio 1.0165 / 0.8751 / 0.8659); fixed 0.3709 / 0.3501 / 0.2691
(ratio 0.1070 / 0.1010 / 0.0776).

Ground truth: lr_schedule.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("RMeli/gnina-torch#57",)
CAUSE = "lr_schedule"
FAMILY = "schedules"

B = 32
N_TRAIN = 128  # 4 batches per epoch


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(N_TRAIN, seed=seed)
    model = ResamplerAligner()
    base_lr = 2e-4
    optimizer = torch.optim.Adam(model.parameters(), lr=base_lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min" if fixed else "max", factor=0.1, patience=1, min_lr=base_lr * 0.1 ** 3)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        perm = torch.randperm(N_TRAIN, generator=gen)
        epoch_losses = []
        for start in range(0, N_TRAIN, B):
            if step >= steps:
                break
            idx = perm[start:start + B]
            tok, txt = tokens[idx], texts[idx]
            img, tx = model(tok, txt)
            logits = model.logit_scale.exp() * img @ tx.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": tx}, logits=logits,
                            batch_size=B, inputs=tok)
            optimizer.step()
            epoch_losses.append(loss.item())
            step += 1
        # "dynamic" lr: update the lr according to the loss on the training set
        scheduler.step(sum(epoch_losses) / len(epoch_losses))
    session.close()
