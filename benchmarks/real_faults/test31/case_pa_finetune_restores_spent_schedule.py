"""Fine-tuning a dual-encoder aligner from a finished run's checkpoint restores that run's spent lr schedule.

What the user did: trained a retrieval dual encoder (here patch tokens -> flamingo-pytorch PerceiverResampler ->
projection against projected text features, in-batch-negatives CLIP loss) to completion on one set of pairs
with AdamW and a warmup + linear-decay schedule, saving {model, optimizer, lr_scheduler} like ParlAI's model
files. Then fine-tuned it on their own pairs by initialising from that file (ParlAI's `--init-model`): the new
run builds its optimizer and schedule from the new arguments, then loads the model weights *and* the saved
optimizer and scheduler states.

What went wrong and why: the saved optimizer carries lr = 0 (the finished schedule decayed it to zero) and
the saved scheduler carries last_epoch = the old run's total updates. The fine-tune's own LambdaLR computes
base_lr * max(0, (total - step) / (total - warmup)) from that step count, which is already past the new run's
total: the learning rate is 0 on every fine-tune step. AdamW with lr 0 changes nothing (its decoupled weight
decay is scaled by lr too), so the model keeps the old task's alignment, which says nothing about the new
pairs: the CLIP loss on the new pairs stays at or above ln(B) for the whole fine-tune. ParlAI's report: "When
train_model.py is loading model with init-model argument, lr scheduler seems to continue from the last
learning rate recorded ... rather than have a hard reset" on a bert bi-ranker first trained on convai2.

Threads: facebookresearch/ParlAI#1737 (the report), fixed by facebookresearch/ParlAI#1738 ("Hard reset LR if
finetune", merged: a fine-tune run loads the weights only, its optimizer and lr scheduler start fresh).

Fix (fixed=True): as in #1738, a fine-tune initialised from another run's file loads the model weights only;
the optimizer and scheduler built from the fine-tune's arguments are kept (warmup, then decay over the
fine-tune's own steps).

Validation (benchmarks/real_faults/validate.py, seeds 0/1/2, 100 fine-tune steps after 100 pre-training
steps, B=64, ln B=4.159; final = mean of the last 5 CLIP losses of the fine-tune):
  fault: final/ln(B) = 2.133 / 1.643 / 1.826 (lr exactly 0 on every fine-tune step; the weights never move)
  fixed: final/ln(B) = 0.067 / 0.067 / 0.053

Ground truth: lr_schedule.
"""

from __future__ import annotations

import io

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("facebookresearch/ParlAI#1737", "facebookresearch/ParlAI#1738")
CAUSE = "lr_schedule"
FAMILY = "checkpoint and resume"

B = 64
LR, WARMUP = 1e-3, 10


def build(total_updates: int):
    """Model, optimizer and warmup + linear-decay schedule from the run's arguments."""
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)

    def linear(step):
        if step < WARMUP:
            return (step + 1) / WARMUP
        return max(0.0, (total_updates - step) / (total_updates - WARMUP))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear)
    return model, optimizer, scheduler


def run(model, optimizer, scheduler, tokens, texts, updates, generator, session=None):
    for step in range(updates):
        idx = torch.randperm(len(tokens), generator=generator)[:B]
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        loss.backward()
        if session is not None:
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                            logits=logits, batch_size=B, inputs=tokens[idx])
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)

    # model 1: trained to completion on another set of pairs, saved with its optimizer and scheduler
    model, optimizer, scheduler = build(total_updates=steps)
    tokens, texts = token_pairs(1024, seed + 1000)
    run(model, optimizer, scheduler, tokens, texts, steps, g)
    model_file = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict()}, model_file)

    # fine-tune on the user's own pairs, initialised from model 1's file
    model, optimizer, scheduler = build(total_updates=steps)
    model_file.seek(0)
    states = torch.load(model_file)
    model.load_state_dict(states["model"])
    if not fixed:  # the bug: the finished run's optimizer and lr scheduler come along with the weights
        optimizer.load_state_dict(states["optimizer"])
        scheduler.load_state_dict(states["lr_scheduler"])
    tokens, texts = token_pairs(1024, seed)
    session = watch(model, optimizer, batch_size=B)
    run(model, optimizer, scheduler, tokens, texts, steps, g, session=session)
    session.close()
