"""Checkpoint and resume: loading the optimizer state brings back the old run's (decayed) learning rate.

What the user did: stage 1 trained the alignment model (flamingo-pytorch PerceiverResampler + projections,
CLIP loss) on one image-text source with AdamW and a cosine schedule down to 1e-6, and saved
`{"model": ..., "optimizer": ...}`. Stage 2 continues from that checkpoint on a new image-text source:
the script builds the model and `AdamW(lr=1e-3)` with the new learning rate, then "resumes" with
`model.load_state_dict(ckpt["model"])` and `optimizer.load_state_dict(ckpt["optimizer"])`, and trains
without a scheduler.

What went wrong and why: `Optimizer.load_state_dict` restores the param groups too, including `lr`. The
new 1e-3 is silently replaced by the last lr of stage 1's cosine (1e-6), so stage 2 runs at a learning rate
~1000x too small: the weights barely move and the CLIP loss on the new pairs stays at chance. The PR that
added the fix to ModernBERT: "Since the optimizer state is loaded from the checkpoint on resumption,
changing any optimizer values needs to occur after the checkpoint is loaded" (setting a new LR / WD on
resumption).

Thread: AnswerDotAI/ModernBERT#123 (allow setting a new LR & WD on resumption: the loaded optimizer state
overrode them).

Fix (fixed=True): after `optimizer.load_state_dict`, set each param group's `lr` (and `initial_lr`) to the
new learning rate.

Validation (validate.py, 100 steps of stage 2, B=32, ln B = 3.4657; final loss / ln B):
fault seed 0/1/2: 2.285 / 1.800 / 1.460 (above chance: the stage-1 weights score the new pairs
confidently wrong and barely move); fixed seed 0/1/2: 0.032 / 0.033 / 0.028.

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import io

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("AnswerDotAI/ModernBERT#123",)
CAUSE = "learning_rate_too_low"
FAMILY = "checkpoint and resume"

B = 32
STAGE1_STEPS = 40


def stage1_checkpoint(seed: int) -> io.BytesIO:
    """The earlier run: another image-text source, AdamW + cosine to 1e-6, checkpoint at the end."""
    torch.manual_seed(seed + 1000)
    tokens, texts = token_pairs(1024, seed + 1000)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STAGE1_STEPS, eta_min=1e-6)
    g = torch.Generator().manual_seed(seed + 1000)
    for _ in range(STAGE1_STEPS):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        loss = clip_loss(model.logit_scale.exp() * img @ txt.t())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buf)
    buf.seek(0)
    return buf


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    ckpt_file = stage1_checkpoint(seed)

    # stage 2: resume from the checkpoint on the new source, with a new learning rate
    lr = 1e-3
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    ckpt = torch.load(ckpt_file)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if fixed:  # the fix: apply the new lr after the optimizer state was loaded
        for group in optimizer.param_groups:
            group["lr"] = lr
            group["initial_lr"] = lr

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
