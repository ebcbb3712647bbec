"""Fine-tuning from a checkpoint that restores the optimizer and lr-scheduler state of the finished pre-training run.

What the user did: pre-trained a flamingo-pytorch PerceiverResampler aligner (patch tokens -> resampler -> mean
-> projection, text projection, CLIP loss) with AdamW and `transformers.get_linear_schedule_with_warmup`, saving
a full checkpoint (model, optimizer, scheduler) at the end. They then started a fine-tuning run on a new set of
image-text pairs from that checkpoint with the resume code path: model, optimizer *and* scheduler state loaded,
a fresh warm-up/linear schedule configured for the fine-tuning length in the config.

What went wrong and why: the restored scheduler carries the pre-training step count (120) and the restored
optimizer param groups carry the lr that schedule had reached: 0.0 at its end. The fine-tuning schedule is
evaluated at step 120 and later, past its own num_training_steps (100), so its multiplier is max(0, ...) = 0 and
the fine-tune runs at end_lr for every step. The weights never move; the loss on the new pairs stays at the level
the pre-trained model starts from (at or above chance: nothing of the pre-training task transfers to the new
pairs).

Threads: kingoflolz/mesh-transformer-jax#25 ("The schedule continues from the loaded step, which generally means
finetuning happens at `end_lr`"; fix: reset the lr schedule's step count when fine-tuning);
EleutherAI/gpt-neox#429 ("do not load optimizer states when finetuning": optimizer and scheduler states were
loaded when `finetune` was true).

Fix (fixed=True): fine-tuning loads only the model weights; the optimizer and the schedule start fresh, so the
warm-up and decay run over the fine-tuning steps as configured.

Validation (benchmarks/real_faults/validate.py, stand-in watch, 100 fine-tuning steps, B=32, ln(B)=3.4657),
final loss / ln(B):
    seed 0: fault 2.4318, fixed 0.0599
    seed 1: fault 2.1757, fixed 0.0707
    seed 2: fault 1.8600, fixed 0.0506

Ground truth: lr_schedule.
"""

from __future__ import annotations

import io

import torch
from transformers import get_linear_schedule_with_warmup

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("kingoflolz/mesh-transformer-jax#25", "EleutherAI/gpt-neox#429")
CAUSE = "lr_schedule"
FAMILY = "checkpoint and resume"

PRETRAIN_STEPS = 120


def _make(lr: float, warmup: int, total: int):
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)
    return model, optimizer, scheduler


def _pretrain(seed: int, B: int) -> bytes:
    """The earlier run that produced the checkpoint: another set of pairs, its own schedule run to the end."""
    torch.manual_seed(seed + 1000)
    tokens, texts = token_pairs(1024, seed=seed + 1000)
    model, optimizer, scheduler = _make(1e-3, 10, PRETRAIN_STEPS)
    g = torch.Generator().manual_seed(seed + 1000)
    for _ in range(PRETRAIN_STEPS):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        loss = clip_loss(model.logit_scale.exp() * img @ txt.t())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": PRETRAIN_STEPS}, buf)
    return buf.getvalue()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    ckpt_bytes = _pretrain(seed, B)

    # --- the fine-tuning run ---
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model, optimizer, scheduler = _make(1e-3, 10, steps)
    ckpt = torch.load(io.BytesIO(ckpt_bytes), weights_only=True)
    model.load_state_dict(ckpt["model"])
    if not fixed:  # the resume path: everything in the checkpoint is restored
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        x = tokens[idx]
        img, txt = model(x, texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=x)
        optimizer.step()
        scheduler.step()
    session.close()
