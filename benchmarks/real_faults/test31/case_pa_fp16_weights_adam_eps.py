"""CLIP fine-tuned with its weights converted to fp16 and a stock AdamW: the loss is NaN from the second step.

What the user did: fine-tuned a CLIP image-text model (here transformers' CLIPModel from a tiny config, random
weights) the way CLIP4Clip trains it: the weights converted to fp16 (`convert_weights(model)` in CLIP4Clip /
openai-CLIP, `model.half()` here) to save memory, inputs cast to half, and the fp16 parameters handed straight
to `torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.2)` with its default eps=1e-8.

What went wrong and why: with fp16 parameters AdamW keeps its moments in fp16 and computes the update
exp_avg / (sqrt(exp_avg_sq) + eps) in fp16. eps=1e-8 is below fp16's smallest subnormal (6e-8) and rounds
to 0 (pytorch/pytorch#26218: "If you use 1e-8 as default and you use 16 bit, it will round to zero"), and
the second-moment increment (1 - beta2) * grad**2 underflows to 0 for gradients below ~2e-3. Every parameter
whose gradient is zero or tiny on the first step (embedding rows of tokens not in the batch, small gradients anywhere) gets 0/0 or x/0: NaN or
Inf weights after the first optimizer step, and every loss after it is NaN. CLIP4Clip's user saw the same
thing at scale: "With convert_weights, the loss will become nan at some point of training. However, if I
train with FP32 or AMP there is no such issue."

Threads: ArrowLuo/CLIP4Clip#96 (fp16 `convert_weights` training goes NaN, FP32 or AMP does not),
pytorch/pytorch#26218 (Adam's eps=1e-8 rounds to zero in fp16; the maintainers' answer: the optimizer should
not update fp16 parameters directly but fp32 master weights).

Fix (fixed=True): AMP, as the thread reports working: the weights (the optimizer's master copy) stay fp32,
the forward runs under `torch.autocast(dtype=torch.float16)`, the loss is scaled with a GradScaler.

Validation (benchmarks/real_faults/validate.py, seeds 0/1/2, 100 steps, B=32, ln B=3.466;
final = mean of the last 5 CLIP losses):
  fault: non-finite on every seed (first NaN loss at step 1, right after the first AdamW step)
  fixed: final/ln(B) = 0.284 / 0.288 / 0.279

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import torch

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("ArrowLuo/CLIP4Clip#96", "pytorch/pytorch#26218")
CAUSE = "nonfinite_divergence"
FAMILY = "mixed precision"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    model = tiny_clip(seed)
    if not fixed:
        model.half()  # CLIP4Clip / openai-CLIP: convert_weights(model), fp16 weights to save memory
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.2)
    scaler = torch.amp.GradScaler("cpu", enabled=fixed)
    pixels, input_ids = image_caption_pairs(1024, seed)
    g = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randperm(len(pixels), generator=g)[:B]
        px = pixels[idx] if fixed else pixels[idx].half()
        with torch.autocast("cpu", dtype=torch.float16, enabled=fixed):
            out = model(input_ids=input_ids[idx], pixel_values=px)
            logits = out.logits_per_image
            loss = clip_loss(logits)
        scaler.scale(loss).backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=logits, batch_size=B, inputs=px)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    session.close()
