"""bf16 model storage with torch.optim.AdamW: the optimizer updates bf16 weights, no fp32 master copy
(flamingo-pytorch PerceiverResampler aligner).

What the user did: to save memory they cast the whole aligner to bfloat16 (`model.to(torch.bfloat16)`,
inputs cast to match) and built a plain `torch.optim.AdamW(model.parameters(), lr=1e-4)` on it,
expecting "mixed precision". AdamW takes its parameters' dtype: its state and, above all, the
weights it writes back are bf16 (areal-project/AReaL#1292: "torch.optim.AdamW inherits bf16 dtype
from model.parameters()", the late-stage loss plateauing ~3x higher than with the DeepSpeed-Z3 /
Megatron optimizers that keep fp32 master weights; meta-pytorch/torchtune#2254: "very bad convergence
with bf16" against fp32 on otherwise identical runs).

What went wrong and why: bf16 keeps 8 significant bits, so a weight w can only move in steps of about
|w| * 2^-8 (2^-7 just above a power of two); an update smaller than half of that rounds back to w.
Adam's step is about lr = 1e-4 per weight per step, so every weight larger than roughly 0.03-0.05 in
magnitude (the median |w| of this aligner is 0.066; LayerNorm gains are 1.0, latents ~0.8) gets an
update below half a bf16 spacing, rounded away on every step: measured on seed 0, 76 % of the 23,169
weights never change in 100 steps, and the ones that do are the smallest. The loss stays near ln(B)
although the gradients are fine; the same model with fp32 weights at the same learning rate learns.
The fix the AReaL maintainers merged (#1369) keeps fp32 master weights for the optimizer and runs
only the compute in bf16.

Threads: areal-project/AReaL#1292 (fixed by areal-project/AReaL#1369), meta-pytorch/torchtune#2254.

Fix: keep the parameters (and so AdamW's state and updates) in fp32 and run the forward under
`torch.autocast("cpu", dtype=torch.bfloat16)`: bf16 compute, fp32 master weights.

Validation (validate.py --half test25, 100 steps, B = 64, ln B = 4.1589; final = mean of the last 5
steps): fault final / ln B = 0.804, 0.826, 1.043 (seeds 0, 1, 2; final 3.345, 3.433, 4.338); fixed
(fp32 master weights, bf16 autocast) 0.291, 0.290, 0.464 (final 1.211, 1.205, 1.929).

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import contextlib

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("areal-project/AReaL#1292", "areal-project/AReaL#1369", "meta-pytorch/torchtune#2254")
CAUSE = "learning_rate_too_low"
FAMILY = "mixed precision"

B = 64
LR = 1e-4


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = ResamplerAligner()
    dtype = torch.bfloat16
    if not fixed:
        model = model.to(dtype)  # "bf16 training": parameters, and so AdamW's updates, in bf16
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        x, t = tokens[idx], texts[idx]
        if fixed:  # fp32 master weights, bf16 compute
            ctx = torch.autocast("cpu", dtype=dtype)
        else:
            ctx = contextlib.nullcontext()
            x, t = x.to(dtype), t.to(dtype)
        with ctx:
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits.float())
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                        logits=logits, batch_size=B, inputs=x)
        optimizer.step()
    session.close()
