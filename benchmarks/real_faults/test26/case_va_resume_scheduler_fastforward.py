"""Fine-tuning from a checkpoint without its optimizer state, LR schedule fast-forwarded to the checkpoint's
iteration: the learning rate is 0 from the first step.

What the user did: a two-stage alignment recipe (perceiver-pytorch `Perceiver` over patch tokens, mean
over latents, projection; small text MLP; CLIP loss with a learnable logit scale; AdamW with a linear
warm-up + cosine-to-zero `LambdaLR` over the run's steps). Stage 1 pretrains on one pair set and saves
`{"model", "optimizer", "scheduler", "iteration"}`. Stage 2 fine-tunes on the target pairs with the same
script, loading the model weights only (a fresh optimizer and schedule for the new stage: the
"--load ckpt --no-load-optim" path). To keep the LR curve continuous across restarts, the script's resume
code also fast-forwards the scheduler by the checkpoint's iteration (`for _ in range(it): sched.step()`).

What went wrong and why: the fast-forward belongs to a real resume (and even there the scheduler state
restored from the checkpoint already holds the position). On the no-load-optim path the fresh schedule,
whose horizon is the new stage's step count, is advanced past its end before the first step: the cosine
factor is clamped at 0, so the learning rate is exactly 0 for the whole fine-tuning stage. No weight
moves; the CLIP loss on the target pairs stays where the pretrained weights put it (above ln(B): the
stage-1 features do not transfer to the new pairs and rank wrong captions first).

Threads: THUDM/slime#1775 (the resume code's extra `opt_param_scheduler.step(increment=iteration * ...)`
fast-forwarded a fresh scheduler when `--no-load-optim` was used, pushing the LR to min_lr at startup: the
observed `lr = 0`; fix: remove the redundant fast-forward), THUDM/slime#1761 (the same resume step
double-advances the scheduler, which checkpoints already save and restore).

Fix (fixed=True): no fast-forward when the optimizer/scheduler state is not restored: the fine-tuning
stage runs its own warm-up + cosine from step 0.

Validation (validate.py, B=64, ln(B)=4.1589, 100 fine-tuning steps after 100 pretraining steps, final loss
/ ln(B) on seeds 0, 1, 2): fault 1.6932 / 2.3186 / 1.8498; fixed 0.0947 / 0.1181 / 0.0998.

Ground truth: lr_schedule.
"""

from __future__ import annotations

import io
import math

import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("THUDM/slime#1775", "THUDM/slime#1761")
CAUSE = "lr_schedule"
FAMILY = "checkpoint and resume"

B = 64
N_PAIRS = 2048
LR = 1e-3
WARMUP = 10


def warmup_cosine(total_steps: int, warmup: int):
    def factor(it: int) -> float:
        if it < warmup:
            return (it + 1) / warmup
        progress = min(1.0, (it - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def run_stage(model, tokens, texts, steps, seed, watch=None, load=None, load_optim=False, fixed=False):
    """One invocation of the user's training script: returns the checkpoint it saves at the end."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, WARMUP))
    iteration = 0
    if load is not None:
        ckpt = torch.load(load)
        model.load_state_dict(ckpt["model"])
        iteration = ckpt["iteration"]
        if load_optim:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        if not fixed:
            # keep the LR curve continuous across restarts
            for _ in range(iteration):
                scheduler.step()
    session = watch(model, optimizer, batch_size=B) if watch is not None else None

    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=gen)
        tok, txt = tokens[idx], texts[idx]
        img_emb, txt_emb = model(tok, txt)
        logits = model.logit_scale.exp() * img_emb @ txt_emb.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        if session is not None:
            session.observe(step, losses={"clip": loss}, embeddings={"image": img_emb, "text": txt_emb},
                            logits=logits, batch_size=B, inputs=tok)
        optimizer.step()
        scheduler.step()
        iteration += 1
    if session is not None:
        session.close()

    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "iteration": iteration}, buf)
    buf.seek(0)
    return buf


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    # stage 1 (an earlier job): pretraining on another pair set, saved to a checkpoint
    torch.manual_seed(seed)
    pre_tokens, pre_texts = token_pairs(N_PAIRS, seed=1000 + seed)
    checkpoint = run_stage(PerceiverAligner(), pre_tokens, pre_texts, steps, seed)

    # stage 2 (this run): fine-tune on the target pairs from the pretrained weights, fresh optimizer
    torch.manual_seed(seed)
    tokens, texts = token_pairs(N_PAIRS, seed=seed)
    run_stage(PerceiverAligner(), tokens, texts, steps, seed + 7, watch=watch, load=checkpoint,
              load_optim=False, fixed=fixed)
