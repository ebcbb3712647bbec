"""A Perceiver-resampler aligner trained in pure fp16 (`model.half()`) instead of mixed precision.

What the user did: to save memory they cast the whole model to half precision with `model = model.half()`
(and the inputs with it) and kept training with AdamW, believing this is "fp16 training". The first
step's loss is normal; from the second step on the loss is NaN and stays NaN.

Why: `model.half()` makes the parameters, their gradients and therefore AdamW's state (exp_avg,
exp_avg_sq) float16. The second-moment update squares the gradients: (1 - beta2) * g**2 falls below
float16's smallest subnormal (~6e-8) for many entries and is stored as exactly 0 (after the first step
23-25% of all exp_avg_sq entries are 0; 77-84% of the resampler's positional embedding), and Adam's
eps=1e-8, added to sqrt(v) in float16, rounds to 0 as well, so those entries are updated by m / 0 (inf)
or 0 / 0 (NaN). That first step leaves non-finite values in 26-28 of the 31 parameter tensors (seeds
0-2), and every later forward is NaN. Mixed precision keeps float32 master weights and optimizer state
and only runs the forward/backward in 16 bit.

Threads: jzhang38/TinyLlama#32 (the user added `model = model.half()` to fit the GPU: "the training loss
becomes 0 after a single batch, and the evaluation loss is nan"; the maintainer: "you conflate the idea
of mixed-precision training and half-precision training. In mixed-precision training model weight is
updated as 32-bit while the forward/backward ..." is 16-bit).

Fix (fixed=True): the thread's fix, real mixed precision: float32 weights and AdamW state, forward under
`torch.autocast(dtype=float16)`, loss on float32 logits, `torch.amp.GradScaler` for the backward.

Validation (validate.py --half test23, final loss / ln(32) over the last 5 steps):
  fault  seeds 0/1/2: non-finite from step 1 on (first loss 5.195 / 5.035 / 4.781)
  fixed  seeds 0/1/2: 0.024 / 0.027 / 0.025 (final 0.085 / 0.094 / 0.087)

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("jzhang38/TinyLlama#32",)
CAUSE = "nonfinite_divergence"
FAMILY = "mixed precision"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    if not fixed:
        model = model.half()  # "fp16 training" to save memory: weights, grads and Adam state in float16
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scaler = torch.amp.GradScaler("cpu") if fixed else None

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        x, t = tokens[idx], texts[idx]
        if fixed:
            with torch.autocast("cpu", dtype=torch.float16):
                img, txt = model(x, t)
                logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits.float())
        else:
            img, txt = model(x.half(), t.half())
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)

        optimizer.zero_grad()
        if fixed:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        inputs=x)
        if fixed:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    session.close()
