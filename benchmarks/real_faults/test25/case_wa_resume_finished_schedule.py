"""Resuming from the last state of a finished run to train on new pairs: the restored schedule is over,
the learning rate is 0 for the whole new job (flamingo-pytorch PerceiverResampler aligner).

What the user did: a first job trained the aligner on one set of image-text pairs with AdamW and a
linear warm-up / linear decay schedule (transformers' `get_linear_schedule_with_warmup`) and saved its
full training state at the end (`model`, `optimizer`, `scheduler`, `step`). To continue training on a
new set of pairs they started the same training script (same config: lr 1e-3, 10 warm-up steps,
`num_training_steps` = the job length) with `--resume last_state.pt`, which restores all four and
continues the global step count from the checkpoint.

What went wrong and why: the restored scheduler is at the step where the first job ended, i.e. at the
end of its linear decay, and the restored optimizer's param groups hold the lr that decay reached:
0. Every later `scheduler.step()` is past `num_training_steps`, where the linear schedule returns
max(0, ...) = 0, so the new job runs every step at lr 0 whatever lr the config asks for. The weights
never move and the loss on the new pairs stays where the first job's weights put it, at or above ln(B)
(kohya-ss/musubi-tuner#497: "LR drops straight to 0 at step one whenever resuming from saved states
... I tried identical params, adjusting LR, removing warmup, but they all show 0 ... the model
learns nothing"; PaddlePaddle/PaddleX#380: lr 0.0 after resume, the maintainer: resume restores
the iteration count and the learning rate with it, which had already decayed to ~0; to fine-tune,
pass the model as pretrained weights instead).

Threads: kohya-ss/musubi-tuner#497, PaddlePaddle/PaddleX#380.

Fix (the PaddleX maintainer's): load the checkpoint's model weights only, as the starting point of a
new run, with a fresh optimizer and schedule starting at step 0.

Validation (validate.py --half test25, 100 steps of the resumed job, B = 64, ln B = 4.1589; final =
mean of the last 5 steps): the first job reaches 0.07 of ln B on its own pairs; resumed job: lr 0.0 on
every step, fault final / ln B = 1.294, 1.715, 1.718 (seeds 0, 1, 2; final 5.382, 7.134, 7.145: the
first job's confident matches are wrong for the new pairs and nothing moves them); fixed (weights only,
fresh optimizer and schedule) 0.062, 0.065, 0.068 (final 0.259, 0.269, 0.284).

Ground truth: lr_schedule.
"""

from __future__ import annotations

import os
import tempfile

import torch
from transformers import get_linear_schedule_with_warmup

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("kohya-ss/musubi-tuner#497", "PaddlePaddle/PaddleX#380")
CAUSE = "lr_schedule"
FAMILY = "checkpoint and resume"

B = 64
LR, WARMUP, WEIGHT_DECAY = 1e-3, 10, 0.05


def build(total_steps):
    """What the training script builds on start-up, the same for every job."""
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=WARMUP,
                                                num_training_steps=total_steps)
    return model, optimizer, scheduler


def run_job(model, optimizer, scheduler, data, start, steps, seed, session=None):
    tokens, texts = data
    g = torch.Generator().manual_seed(seed)
    for step in range(start, start + steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        if session is not None:
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                            logits=logits, batch_size=B, inputs=tokens[idx])
        optimizer.step()
        scheduler.step()
    return start + steps


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    total_steps = steps  # the config's job length, used for num_training_steps in every job
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_path = os.path.join(tmp, "last_state.pt")

        # job 1 (earlier): first set of pairs, runs its schedule to the end, saves its full state
        torch.manual_seed(seed)
        model, optimizer, scheduler = build(total_steps)
        end = run_job(model, optimizer, scheduler, token_pairs(2048, seed + 1000), 0, total_steps, seed + 1000)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": end}, ckpt_path)

        # job 2: same script and config, new pairs, started with --resume last_state.pt
        torch.manual_seed(seed + 1)
        model, optimizer, scheduler = build(total_steps)
        ckpt = torch.load(ckpt_path)
        model.load_state_dict(ckpt["model"])
        if fixed:  # fine-tune: the weights only, fresh optimizer and schedule from step 0
            start = 0
        else:  # resume: optimizer, scheduler and step count restored too
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            start = ckpt["step"]
        session = watch(model, optimizer, batch_size=B)
        run_job(model, optimizer, scheduler, token_pairs(2048, seed), start, steps, seed, session)
        session.close()
