"""OneCycleLR stepped with the epoch index on every batch: the learning rate never leaves the start of
its warm-up (perceiver-pytorch Perceiver aligner).

What the user did: their training code builds a per-iteration OneCycleLR (`OneCycleLR(optimizer,
max_lr=lr, total_steps=epochs * steps_per_epoch, final_div_factor=1e4)`, stepped at interval
"step") and drives every scheduler through one hook, `lr_scheduler_step(scheduler, epoch)`, that calls
`scheduler.step(epoch=current_epoch)` so that the epoch-based schedulers of the same code base see the
epoch. The hook runs after every optimizer step (chengtan9907/OpenSTL#113: "a performance
degradation when employing the onecycle scheduler ... the onecycle scheduler operates on a
per-iteration basis rather than per-epoch", fixed by the maintainer in a6e0dd3 by removing the
hook).

What went wrong and why: `step(epoch=e)` does not advance OneCycleLR by one iteration, it sets its
position to e, and OneCycleLR has no per-epoch form: its lr at position e is the lr of iteration e of
the cycle. During epoch 0 every batch sets it to iteration 0 (max_lr / div_factor = 1e-3 / 25 =
4e-5), during epoch 1 to iteration 1 (4.3e-5): the warm-up to max_lr (30 % of the 100 iterations)
is never walked, the cycle never reaches its peak, and the aligner trains the whole run at about
1/25 of the learning rate it was configured for. The loss stays close to ln(B).

Threads: chengtan9907/OpenSTL#113.

Fix (the maintainer's): step the per-iteration scheduler once per optimizer step with
`scheduler.step()`, no epoch argument.

Validation (validate.py --half test25, 100 steps = 2 epochs of 50 batches, B = 64, ln B = 4.1589;
final = mean of the last 5 steps): fault final / ln B = 0.795, 0.905, 0.920 (seeds 0, 1, 2; final
3.306, 3.764, 3.825); fixed (scheduler.step() once per batch) 0.081, 0.080, 0.081 (final 0.335, 0.332,
0.335).

Ground truth: lr_schedule.
"""

from __future__ import annotations

import math

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("chengtan9907/OpenSTL#113",)
CAUSE = "lr_schedule"
FAMILY = "schedules"

B = 64
STEPS_PER_EPOCH = 50
LR, WEIGHT_DECAY = 1e-3, 0.05


def lr_scheduler_step(scheduler, epoch):
    """The training code's one scheduler hook, shared by its epoch-based schedulers."""
    scheduler.step(epoch=epoch)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(STEPS_PER_EPOCH * B, seed)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    epochs = math.ceil(steps / STEPS_PER_EPOCH)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=epochs * STEPS_PER_EPOCH,
                                                    final_div_factor=1e4)

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(tokens), generator=g)
        for i in range(STEPS_PER_EPOCH):
            if step == steps:
                break
            idx = order[i * B:(i + 1) * B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                            logits=logits, batch_size=B, inputs=tokens[idx])
            optimizer.step()
            if fixed:
                scheduler.step()
            else:
                lr_scheduler_step(scheduler, epoch)  # interval "step": called after every batch
            step += 1
    session.close()
