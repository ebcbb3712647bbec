"""Resuming an RWKV-style "mini-epoch" run whose step offset is counted in samples: the lr falls off a cliff.

What the user did (OpenMOSE/RWKV5-LM-LoRA#3): the RWKV trainers compute the learning rate every step from `real_step =
trainer.global_step + args.epoch_begin * args.epoch_steps` (warm-up over the first `warmup_steps` steps of the
process, then an exponential decay from `lr_init` to `lr_final` over `epoch_count` mini-epochs, held at `lr_final`
afterwards); to continue from the checkpoint of mini-epoch N you reload its weights and set `epoch_begin = N + 1`. The
reporter (in Chinese) had trained 200 mini-epochs, merged the LoRA into the base model, set `epoch_begin = 201` and
found the learning rate "falls off a cliff: epoch-200's lr >>> epoch-201's", and fixed it by dividing the offset by
the batch size (`... + args.epoch_begin * args.epoch_steps / args.real_bsz`): the offset was in a unit `real_bsz`
times larger than `global_step`'s, samples instead of optimizer steps.

Here an image-text aligner (flamingo-pytorch PerceiverResampler over frozen-backbone patch tokens, CLIP loss) is
trained with that schedule and a mini-epoch of 160 pairs (5 steps of 32), a checkpoint after each. The first run was
stopped after mini-epoch 0 (its weights are saved, as in RWKV); the run that is watched reloads them with `epoch_begin
= 1` and computes `real_step = global_step + epoch_begin * EPOCH_SAMPLES`.

Why it fails: the resumed run believes it is at step 160 of a 105-step schedule, so the decay's progress is clamped at
1 from its first step and the lr is `lr_final` = 1e-5 (times the restart warm-up factor) for the whole run instead of
starting near `lr_init` = 1e-3 and decaying: 100x too small. The checkpoint had only seen 5 steps, so the model sits
where it was, near ln(B), with its weights barely moving. The schedule, not the lr setting, took the learning rate
away.

Fix (the thread's): count the offset in optimizer steps, `real_step = global_step + epoch_begin * EPOCH_SAMPLES //
micro_bsz`; the resumed run then continues the decay from 1e-3 at step 5 as the uninterrupted run would have.

Validation (benchmarks/real_faults/validate.py, 100 resumed steps, B = 32, ln B = 3.4657, torch 2.13 CPU), final CLIP
loss (mean of the last 5 steps) / ln B per seed 0, 1, 2:
- fault: 0.9843, 0.9136, 0.8826 (first resumed step 1.12, 0.99, 1.01 x ln B);
- fixed: 0.0890, 0.0849, 0.0980.

Ground truth: lr_schedule.
"""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("OpenMOSE/RWKV5-LM-LoRA#3",)
CAUSE = "lr_schedule"
FAMILY = "checkpoint and resume"

EPOCH_SAMPLES = 160  # image-caption pairs per mini-epoch; a checkpoint is written after each


def rwkv_lr(args, global_step, real_step):
    """The RWKV trainer's schedule: exp decay lr_init -> lr_final over epoch_count mini-epochs, warm-up on restart."""
    w_step = args.warmup_steps
    decay_total = args.epoch_count * args.epoch_steps
    progress = (real_step - w_step + 1) / (decay_total - w_step)
    progress = min(1, max(0, progress))
    lr = args.lr_init * math.exp(math.log(args.lr_final / args.lr_init) * progress)
    if global_step < w_step:
        lr = lr * (0.2 + 0.8 * global_step / w_step)
    return lr


def run(model, args, n_steps, data, g, fixed, session=None):
    tokens, texts = data
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr_init, betas=(0.9, 0.99), weight_decay=0.0)
    if session is not None:
        session = session(model, optimizer, batch_size=args.micro_bsz)
    for global_step in range(n_steps):
        if fixed:
            real_step = global_step + args.epoch_begin * EPOCH_SAMPLES // args.micro_bsz
        else:
            real_step = global_step + args.epoch_begin * EPOCH_SAMPLES
        for param_group in optimizer.param_groups:
            param_group["lr"] = rwkv_lr(args, global_step, real_step)

        idx = torch.randint(0, len(tokens), (args.micro_bsz,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        if session is not None:
            session.observe(global_step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        optimizer.step()
    if session is not None:
        session.close()
    return model


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    data = token_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)
    args = SimpleNamespace(lr_init=1e-3, lr_final=1e-5, warmup_steps=10, micro_bsz=32,
                           epoch_steps=EPOCH_SAMPLES // 32, epoch_count=21, epoch_begin=0)

    # the first run: mini-epoch 0, then it was stopped; its weights were saved (RWKV saves weights only)
    first = run(ResamplerAligner(), args, args.epoch_steps, data, g, fixed)
    ckpt = io.BytesIO()
    torch.save(first.state_dict(), ckpt)

    # the resumed run: load mini-epoch 0's weights, epoch_begin = 1
    ckpt.seek(0)
    model = ResamplerAligner()
    model.load_state_dict(torch.load(ckpt))
    args.epoch_begin = 1
    run(model, args, steps, data, g, fixed, session=watch)
