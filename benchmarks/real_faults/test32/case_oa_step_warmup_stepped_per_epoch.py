"""Schedules: a linear-warmup + cosine schedule written in optimizer steps is stepped once per epoch, so the
learning rate sits at the warmup's start value (0) for the whole first epoch and creeps up by 1/9 of the base
lr per epoch after that.

What the user did: a perceiver-pytorch aligner (Perceiver latents cross-attending to frozen-backbone patch
tokens, mean over latents, linear projection; MLP text tower; learnable logit scale) trained contrastively with
AdamW at lr 5e-4 and the usual warmup-cosine schedule, pl_bolts' `LinearWarmupCosineAnnealingLR(optimizer,
warmup_epochs=10, max_epochs=1000)` (warmup_start_lr=0, eta_min=0), meant per optimizer step: 10 warmup steps,
then cosine to 0 at the last of the 1000 planned steps (the first 100 are run here). Like a Lightning
`configure_optimizers` that returns `[optimizer], [scheduler]`, whose default interval is "epoch", their loop
calls `scheduler.step()` once at the end of each epoch (2048 pairs, B=32: 64 batches per epoch).

What goes wrong and why: the scheduler counts what it is stepped with. Stepped per epoch, its counter is 0 for
the first 64 optimizer steps, so the lr is warmup_start_lr = 0 and AdamW does nothing at all for a whole epoch;
in the second epoch it is 5e-4 / 9 = 5.6e-5, and the base lr the user chose is reached only in the tenth
epoch, after 576 steps. The loss sits at its initial value through epoch 0 and then drifts slowly: after 100
steps the run is still near chance, where the schedule stepped per batch has learned the pairs.

Threads: Lightning-Universe/lightning-bolts#716 ("LinearWarmupCosineAnnealingLR seems to not update lr": with
`return [optimizer], [scheduler]` the lr logged per step does not change; returned as `{'scheduler': scheduler,
'interval': 'step'}` it moves. Lightning steps a scheduler once per epoch unless told otherwise).

Fix (fixed=True): call `scheduler.step()` after every optimizer step (Lightning: `"interval": "step"`).

Validation (validate.py, 100 steps, B=32, final = mean of the last 5 CLIP losses, ln(32) = 3.4657):
fault final/ln(B) = 0.941, 1.109, 1.024 (seeds 0, 1, 2); fixed = 0.073, 0.076, 0.079.

Ground truth: lr_schedule.
"""

from __future__ import annotations

import math

import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("Lightning-Universe/lightning-bolts#716",)
CAUSE = "lr_schedule"
FAMILY = "schedules"


def linear_warmup_cosine(optimizer, warmup_epochs: int, max_epochs: int, warmup_start_lr: float = 0.0,
                         eta_min: float = 0.0):
    """pl_bolts' LinearWarmupCosineAnnealingLR (closed form), as a LambdaLR."""
    base = optimizer.param_groups[0]["lr"]

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            lr = warmup_start_lr + epoch * (base - warmup_start_lr) / max(1, warmup_epochs - 1)
        else:
            t = (epoch - warmup_epochs) / max(1, max_epochs - warmup_epochs)
            lr = eta_min + 0.5 * (base - eta_min) * (1 + math.cos(math.pi * min(t, 1.0)))
        return lr / base

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    tokens, texts = token_pairs(2048, seed)
    torch.manual_seed(seed)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.0)
    total_steps = 1000                                    # the planned run; the first `steps` are run here
    scheduler = linear_warmup_cosine(optimizer, warmup_epochs=10, max_epochs=total_steps)   # meant in steps
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        perm = torch.randperm(len(tokens), generator=g)
        for i in range(0, len(tokens) - B + 1, B):
            if step >= steps:
                break
            idx = perm[i:i + B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tokens[idx])
            optimizer.step()
            if fixed:
                scheduler.step()          # per optimizer step, as the schedule is written
            step += 1
        if not fixed:
            scheduler.step()              # once per epoch ("interval": "epoch")
    session.close()
