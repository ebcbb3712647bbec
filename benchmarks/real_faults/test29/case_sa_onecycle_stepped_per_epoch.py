"""OneCycleLR sized in optimizer steps (total_steps=1000, the default of the LR-scheduler node) but stepped
once per epoch by the training loop: the learning rate never leaves the bottom of the warm-up, at
max_lr / 25, and the aligner stays near chance.

What the user did: a perceiver-pytorch Perceiver aligner (patch tokens -> Perceiver latents -> mean ->
projection; text -> MLP; CLIP loss), AdamW, and a one-cycle schedule, `OneCycleLR(optimizer,
max_lr=5e-4, total_steps=1000)`, built the way CodefyUI's LRScheduler node builds it (total_steps
defaults to 1000) and stepped the way its TrainingLoop node steps every scheduler: one
`scheduler.step()` per epoch, after the epoch's batches. 640 pairs, batch 32: 20 optimizer steps per
epoch, 5 epochs for the 100 steps of the run.

What went wrong and why: OneCycleLR counts its `total_steps` in calls to `step()`, i.e. in optimizer
steps as PyTorch means it; stepped once per epoch, the run walks 5 of the 1000 steps of the cycle. The
cycle starts at initial_lr = max_lr / div_factor = 5e-4 / 25 = 2e-5 and warms up over the first 30 %
(300 calls), so the lr the optimizer uses goes 2.000e-5, 2.001e-5, 2.005e-5, 2.012e-5, 2.021e-5 over
the 5 epochs: the whole run trains at 1/25 of the intended peak, never warms up and never anneals.
At that lr the Perceiver aligner barely moves in 100 steps and the CLIP loss stays near ln(B).

Threads: CodefyUI/CodefyUI#244 ("OneCycleLR.total_steps defaults to 1000 while the scheduler steps per
epoch, so the LR never anneals": "with total_steps=1000 and a real run: 5 epochs, 0.5 % of the cycle
traversed, rises barely off the floor, stays there") and CodefyUI/CodefyUI#297 (the fix: step the
scheduler per optimizer step so "OneCycleLR/CosineAnnealingLR with step-denominated budgets then behave
as configured"). Fix (fixed=True): `scheduler.step()` after every optimizer step, with total_steps the
number of optimizer steps of the run.

Validation (validate.py --half test29, seeds 0/1/2, 100 steps, B = 32, ln(B) = 3.4657):
fault: final loss 3.2754 / 4.3203 / 3.5595, final / ln(B) = 0.9451 / 1.2466 / 1.0270;
fixed: final loss 0.4930 / 0.6932 / 0.5848, final / ln(B) = 0.1422 / 0.2000 / 0.1688 (lr warmed up from
2e-5 to 5e-4 over the first 30 steps, then annealed).

Ground truth: lr_schedule.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("CodefyUI/CodefyUI#244", "CodefyUI/CodefyUI#297")
CAUSE = "lr_schedule"
FAMILY = "schedules"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    tokens, texts = token_pairs(640, seed=seed)
    loader = DataLoader(TensorDataset(tokens, texts), batch_size=B, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    epochs = math.ceil(steps / len(loader))

    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    if fixed:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-4, total_steps=steps)
    else:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-4, total_steps=1000)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    for epoch in range(epochs):
        for tok, txt_feat in loader:
            if step >= steps:
                break
            img, txt = model(tok, txt_feat)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tok)
            optimizer.step()
            optimizer.zero_grad()
            if fixed:
                scheduler.step()  # per optimizer step (CodefyUI#297)
            step += 1
        if not fixed:
            scheduler.step()  # the training loop steps every scheduler once per epoch
    session.close()
