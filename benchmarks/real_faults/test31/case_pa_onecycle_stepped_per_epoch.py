"""OneCycleLR registered as an epoch-step scheduler: the learning rate never leaves its starting value.

What the user did: trained a Perceiver image->text aligner (perceiver-pytorch Perceiver over frozen patch
tokens, mean over latents, projection; text MLP; CLIP loss) with a trainer loop in the style of ESPnet2: each
scheduler class is registered as a batch-step or an epoch-step scheduler, and the loop steps batch-step
schedulers after every optimizer step and epoch-step schedulers at the end of every epoch. OneCycleLR was
registered with the epoch-step kind (ESPnet2 after espnet/espnet#3303), configured as usual with
max_lr, epochs and steps_per_epoch.

What went wrong and why: OneCycleLR's schedule is laid out over epochs * steps_per_epoch calls of step(). Stepped
once per epoch it advances 7 of its 112 positions in the whole run, so the warm-up never gets going: the
learning rate sits at its starting value max_lr / div_factor = 5e-4 / 25 = 2e-5 (rising to 5.9e-5 in the
last epoch) instead of climbing to 5e-4 and annealing. At 2e-5 AdamW barely moves the weights in 100 steps
and the CLIP loss stays near ln(B). ESPnet's fix: "OneCycleLR and CyclicLR schedulers should be per
iteration, not per epoch" (the maintainers: "this bug comes from #3303").

Threads: espnet/espnet#3319 (the fix, merged), espnet/espnet#3303 (the change that registered OneCycleLR
as an epoch scheduler).

Fix (fixed=True): as in #3319, OneCycleLR is registered as a batch-step scheduler and stepped after every
optimizer step.

Validation (benchmarks/real_faults/validate.py, seeds 0/1/2, 100 steps, B=64, ln B=4.159;
final = mean of the last 5 CLIP losses):
  fault: final/ln(B) = 0.950 / 0.964 / 0.925 (largest lr used: 5.9e-5)
  fixed: final/ln(B) = 0.155 / 0.181 / 0.158

Ground truth: lr_schedule.
"""

from __future__ import annotations

import math
from abc import ABC

import torch
import torch.optim.lr_scheduler as L

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("espnet/espnet#3319", "espnet/espnet#3303")
CAUSE = "lr_schedule"
FAMILY = "schedules"

B = 64
MAX_LR = 5e-4


def scheduler_kinds(fixed: bool):
    """ESPnet2-style: which schedulers step per batch and which per epoch (abstract classes + register)."""

    class AbsBatchStepScheduler(ABC):
        pass

    class AbsEpochStepScheduler(ABC):
        pass

    for s in (L.LambdaLR, L.StepLR, L.MultiStepLR, L.ExponentialLR, L.CosineAnnealingLR):
        AbsEpochStepScheduler.register(s)
    AbsBatchStepScheduler.register(L.CosineAnnealingWarmRestarts)
    if fixed:  # espnet#3319: OneCycleLR and CyclicLR are per iteration
        AbsBatchStepScheduler.register(L.OneCycleLR)
        AbsBatchStepScheduler.register(L.CyclicLR)
    else:  # as registered by espnet#3303
        AbsEpochStepScheduler.register(L.OneCycleLR)
        AbsEpochStepScheduler.register(L.CyclicLR)
    return AbsBatchStepScheduler, AbsEpochStepScheduler


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    BatchStep, EpochStep = scheduler_kinds(fixed)
    torch.manual_seed(seed)
    model = PerceiverAligner()
    tokens, texts = token_pairs(1024, seed)
    steps_per_epoch = len(tokens) // B
    max_epoch = math.ceil(steps / steps_per_epoch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=MAX_LR, weight_decay=0.01)
    scheduler = L.OneCycleLR(optimizer, max_lr=MAX_LR, epochs=max_epoch, steps_per_epoch=steps_per_epoch)
    g = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    for epoch in range(max_epoch):
        perm = torch.randperm(len(tokens), generator=g)
        for i in range(steps_per_epoch):
            if step >= steps:
                break
            idx = perm[i * B:(i + 1) * B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                            logits=logits, batch_size=B, inputs=tokens[idx])
            optimizer.step()
            optimizer.zero_grad()
            if isinstance(scheduler, BatchStep):
                scheduler.step()
            step += 1
        if isinstance(scheduler, EpochStep):
            scheduler.step()
    session.close()
