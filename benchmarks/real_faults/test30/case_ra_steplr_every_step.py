"""A per-epoch StepLR(step_size=1, gamma=0.85) stepped after every optimizer step: the lr is gone in ~30 steps.

What the user did: fine-tuning loop copied from the llama-recipes recipe (`optimizer = AdamW(...)`,
`scheduler = StepLR(optimizer, step_size=1, gamma=train_config.gamma)` with gamma 0.85, a schedule meant to
decay the lr by 15% once per EPOCH), applied to a flamingo-pytorch PerceiverResampler image->text contrastive
aligner. As in the recipe's `train()`, `lr_scheduler.step()` sits inside the batch loop, right after
`optimizer.step()`, so the "per-epoch" decay is applied on every optimizer step.

What went wrong and why: after k optimizer steps the lr is lr0 * 0.85**k: x0.2 after 10 steps, x0.008 after 30,
x3e-5 after 64. The whole run gets sum_k 0.85**k = 1/(1-0.85) ~ 6.7 steps' worth of lr0, spent while the
resampler's latents and the projections are still near their random init (AdamW at lr0 = 2e-4), so the CLIP
loss falls a little from its start (4.6-5.0, the 14.3 logit scale on random embeddings) and then freezes above
ln(B): the schedule, not the model or the data, took the learning rate away.
llama-recipes#27 reported exactly this ("lr_scheduler.step is called every gradient_accumulation_steps times.
This leads to a rapid decrease of the learning rate"); the maintainers fixed it (PR #28) by moving the
scheduler step to the end of the epoch.

The fix (fixed=True): `scheduler.step()` once per epoch, after the batch loop (32 steps an epoch here, so the
100 steps run at lr0, 0.85 lr0, 0.72 lr0, 0.61 lr0).

Validation (validate.py --half test30, stand-in watch, CPU, 1 thread; final = mean of the last 5 steps,
B = 32, ln B = 3.4657):
    seed 0: fault 4.3008 (1.241 ln B), fixed 0.5407 (0.156 ln B)
    seed 1: fault 4.0671 (1.174 ln B), fixed 0.4865 (0.140 ln B)
    seed 2: fault 3.7806 (1.091 ln B), fixed 0.5141 (0.148 ln B)

Thread: meta-llama/llama-cookbook#27 (filed as facebookresearch/llama-recipes#27; fixed in PR #28).

Ground truth: lr_schedule.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import StepLR

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("meta-llama/llama-cookbook#27",)
CAUSE = "lr_schedule"
FAMILY = "schedules"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.85)  # "decay the lr 15% per epoch"

    session = watch(model, optimizer, batch_size=B)
    g = torch.Generator().manual_seed(seed)
    step = 0
    while step < steps:
        order = torch.randperm(len(tokens), generator=g)
        for i in range(0, len(order) - B + 1, B):  # one epoch
            idx = order[i:i + B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tokens[idx])
            optimizer.step()
            if not fixed:
                scheduler.step()  # the recipe's placement: inside the batch loop, after every optimizer step
            step += 1
            if step >= steps:
                break
        if fixed:
            scheduler.step()  # the fix: once per epoch
    session.close()
