"""MiniGPT-4/LAVIS linear-warmup-cosine scheduler warms up on the step *within the epoch*: the warm-up restarts every
epoch and never gets past a few percent of the learning rate.

What the user did: trained a vision->text aligner MiniGPT-4 style (frozen patch tokens -> flamingo-pytorch
PerceiverResampler -> mean over latents -> projection, text -> projection, CLIP loss) with the repository's
`LinearWarmupCosineLRScheduler` copied as is and their run config: `init_lr=1e-3`, `min_lr=1e-5`,
`warmup_lr=1e-6`, `warmup_steps=200`, `iters_per_epoch=len(loader)` (256 pairs at B=32: 8 iterations per epoch),
the runner calling `lr_sched.step(cur_epoch=epoch, cur_step=i)` with `i` the index inside the epoch, as
MiniGPT-4's `train_inner_loop` does. Warm-up longer than an epoch is ordinary when the dataset is small (the
shipped stage-1 config has `warmup_steps` = `iters_per_epoch` = 5000).

What went wrong and why: the scheduler decides *whether* to warm up from the global step
(`total_cur_step = cur_epoch * iters_per_epoch + cur_step < warmup_steps`) but computes the warm-up lr from the
in-epoch step: `warmup_lr_schedule(step=cur_step, max_step=warmup_steps, ...)`. So the lr restarts at
`warmup_lr` every epoch and climbs only to about `init_lr * 7/200` = 3.6e-5 before resetting: a saw-tooth that
never exceeds 3.5% of the configured lr for the first 200 steps (the whole 100-step run here). The resampler and
projections barely move and the CLIP loss stays at its initial level (above ln(B), the logit scale is 1/0.07).

Thread: Vision-CAIR/MiniGPT-4#263 ("bug: fix warmup LR": "LR resets every epoch during warmup to `warmup_start_lr`
because it uses inner epoch step counter. We need to use `total_cur_step` to increment LR continuously from epoch
to epoch.").

Fix (fixed=True): the PR's change, `warmup_lr_schedule(step=total_cur_step, ...)`: the lr ramps once over the 200
warm-up steps (0.5 * init_lr by step 100) instead of restarting each epoch.

Validation (validate.py --half test24, seeds 0/1/2, 100 steps, B=32, final CLIP loss / ln(B)):
fault 1.313 / 0.972 / 1.206 (final 4.55 / 3.37 / 4.18 vs ln 32 = 3.466), fixed 0.108 / 0.098 / 0.119.

Ground truth: lr_schedule.
"""

from __future__ import annotations

import math

import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("Vision-CAIR/MiniGPT-4#263",)
CAUSE = "lr_schedule"
FAMILY = "schedules"

B = 32


def cosine_lr_schedule(optimizer, epoch, max_epoch, init_lr, min_lr):
    lr = (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / max_epoch)) + min_lr
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr


def warmup_lr_schedule(optimizer, step, max_step, init_lr, max_lr):
    lr = min(max_lr, init_lr + (max_lr - init_lr) * step / max(max_step, 1))
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr


class LinearWarmupCosineLRScheduler:
    def __init__(self, optimizer, max_epoch, iters_per_epoch, min_lr, init_lr, warmup_steps=0, warmup_start_lr=-1,
                 fixed=False):
        self.optimizer = optimizer
        self.max_epoch = max_epoch
        self.iters_per_epoch = iters_per_epoch
        self.min_lr = min_lr
        self.init_lr = init_lr
        self.warmup_steps = warmup_steps
        self.warmup_start_lr = warmup_start_lr if warmup_start_lr >= 0 else init_lr
        self.fixed = fixed

    def step(self, cur_epoch, cur_step):
        total_cur_step = cur_epoch * self.iters_per_epoch + cur_step
        if total_cur_step < self.warmup_steps:
            warmup_lr_schedule(step=total_cur_step if self.fixed else cur_step, optimizer=self.optimizer,
                               max_step=self.warmup_steps, init_lr=self.warmup_start_lr, max_lr=self.init_lr)
        else:
            cosine_lr_schedule(epoch=total_cur_step, optimizer=self.optimizer,
                               max_epoch=self.max_epoch * self.iters_per_epoch, init_lr=self.init_lr,
                               min_lr=self.min_lr)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(256, seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    iters_per_epoch = len(tokens) // B
    lr_sched = LinearWarmupCosineLRScheduler(optimizer, max_epoch=50, iters_per_epoch=iters_per_epoch, min_lr=1e-5,
                                             init_lr=1e-3, warmup_steps=200, warmup_start_lr=1e-6, fixed=fixed)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    for epoch in range(math.ceil(steps / iters_per_epoch)):
        perm = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for i in range(iters_per_epoch):
            if step >= steps:
                break
            lr_sched.step(cur_epoch=epoch, cur_step=i)
            idx = perm[i * B:(i + 1) * B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tokens[idx])
            optimizer.step()
            step += 1
    session.close()
