"""Checkpoint and resume: fine-tuning from a released checkpoint also restores its optimizer state, and with it
the learning rate the checkpoint's cosine schedule had annealed to (6.6e-7), which overrides the lr the user
asked for.

What the user did: they take a released contrastive checkpoint (here a perceiver-pytorch aligner trained with
AdamW at lr 1e-3 and a cosine annealing schedule over its whole run, on other image-text pairs) and fine-tune
it on their own pairs. Their fine-tuning script builds `AdamW(model.parameters(), lr=1e-3)` and then, to keep
Adam's moments as the resume code of the original repository does, loads the checkpoint's optimizer state:

    model.load_state_dict(ckpt["model"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer.load_state_dict(ckpt["optimizer"])

What goes wrong and why: an optimizer's state dict holds its param groups, and a param group holds `lr`.
`load_state_dict` replaces the groups' hyper-parameters with the saved ones, so the fine-tuning runs at the lr
the original run ended with: the last value of its cosine schedule, 1e-3 * (1 + cos(pi * 60/61)) / 2 = 6.6e-7,
not 1e-3. At 6.6e-7 per step Adam moves no weight measurably in 100 steps: the loss on the new pairs stays where
the released model puts it (above ln(B): the checkpoint is confident, and wrong, on pairs it has never seen).
Nothing is printed; only `optimizer.param_groups[0]["lr"]` shows it.

Threads: JIA-Lab-research/Parametric-Contrastive-Learning#25 ("I want to fine tune ... when I reloaded the
provided checkpoint, I found the learning rate is 0.00000065", while the user expected 0.00395: the
checkpoint's optimizer state carries the last lr of the cosine-annealed run that produced it).

Fix (fixed=True): after loading the optimizer state, set each param group's lr back to the fine-tuning lr (or
do not load the optimizer state at all).

Validation (validate.py, 100 steps, B=32, final = mean of the last 5 CLIP losses, ln(32) = 3.4657):
fault final/ln(B) = 1.879, 2.244, 1.920 (seeds 0, 1, 2; the loss stays around its first value);
fixed = 0.042, 0.034, 0.037.

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import io

import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("JIA-Lab-research/Parametric-Contrastive-Learning#25",)
CAUSE = "learning_rate_too_low"
FAMILY = "checkpoint and resume"


def _batches(n, B, g):
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - B + 1, B):
            yield perm[i:i + B]


def released_checkpoint(seed: int, steps: int = 60, B: int = 32) -> io.BytesIO:
    """The checkpoint the user starts from: a full pretraining run on other pairs, AdamW + cosine annealing
    over the whole run, saved at its end with the model and the optimizer state (as its repository does)."""
    torch.manual_seed(1000 + seed)
    tokens, texts = token_pairs(1024, 1000 + seed)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps + 1)
    batches = _batches(len(tokens), B, torch.Generator().manual_seed(1000 + seed))
    for _ in range(steps):
        idx = next(batches)
        img, txt = model(tokens[idx], texts[idx])
        loss = clip_loss(model.logit_scale.exp() * img @ txt.t())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": steps}, buf)
    buf.seek(0)
    return buf


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B, lr = 32, 1e-3
    ckpt = torch.load(released_checkpoint(seed))
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)          # the user's own pairs
    model = PerceiverAligner()
    model.load_state_dict(ckpt["model"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    optimizer.load_state_dict(ckpt["optimizer"])      # keep Adam's moments ... and the checkpoint's lr
    if fixed:
        for group in optimizer.param_groups:
            group["lr"] = lr
    batches = _batches(len(tokens), B, torch.Generator().manual_seed(seed))
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = next(batches)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
