"""Gradient clipping applied to the GradScaler's scaled gradients (no `scaler.unscale_` first).

What the user did: added automatic mixed precision to a working alignment loop (patch tokens ->
flamingo-pytorch PerceiverResampler -> projection, text features -> projection, CLIP loss), following
the AMP recipe: `autocast` around the forward, `scaler.scale(loss).backward()`, `scaler.step(optimizer)`,
`scaler.update()`; and kept their gradient clipping, `clip_grad_norm_(model.parameters(), 12)`, right
after the backward, as it was before AMP. Optimizer: Adadelta(lr=1.0), as in the PyTorch MNIST example the
thread's script started from. (CPU here: bfloat16 autocast and `torch.amp.GradScaler("cpu")`; on a GPU
the thread used float16 and `torch.cuda.amp`, the arithmetic of the bug is the same.)

What went wrong: "when I include the line clip_grad_norm_(model.parameters(), 12) the loss does not
decrease anymore". After `scaler.scale(loss).backward()` the .grad tensors hold gradient x 65536 (the
scaler's initial scale). Their norm is far above 12, so clipping rescales them to norm 12 — and then
`scaler.step` divides by 65536 again before the update. Every step's gradient therefore has norm
12/65536 ~ 2e-4, whatever the loss says; Adadelta (like SGD) turns that into an update of the same size,
so the weights barely move and the loss stays at its initial level. The clipping threshold is, in effect,
65536 times smaller than written.

Threads: pytorch/pytorch#40907 ("Gradient clipping with torch.cuda.amp": the loss stops decreasing when
clipping is added; answer: call `scaler.unscale_(optimizer)` before clipping, as the AMP examples show);
the same bug found in frameworks: rwth-i6/returnn#1590 ("the effective value gradient_clip_global_norm
with AMP is reduced by a factor of 65k"), Lightning-AI/pytorch-lightning#9694, pytorch/examples#1196.

Fix (fixed=True): `scaler.unscale_(optimizer)` between the backward and `clip_grad_norm_`.

Validation (validate.py, 100 steps, B=32, ln(B)=3.4657; final = mean of the last 5 losses / ln(B)):
    seed 0: fault 1.0307, fixed 0.0129
    seed 1: fault 1.0359, fixed 0.0194
    seed 2: fault 1.3675, fixed 0.0142
(the fault ends above ln(B): the initial loss at logit scale 1/0.07, which the weights never leave)

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("pytorch/pytorch#40907", "rwth-i6/returnn#1590", "Lightning-AI/pytorch-lightning#9694")
CAUSE = "learning_rate_too_low"
FAMILY = "mixed precision"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    device = "cpu"
    amp_dtype = torch.bfloat16 if device == "cpu" else torch.float16
    model = ResamplerAligner()
    tokens, texts = token_pairs(2048, seed)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler(device)
    g = torch.Generator().manual_seed(seed)

    with watch(model, optimizer, batch_size=B) as session:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            optimizer.zero_grad()
            with torch.autocast(device, dtype=amp_dtype):
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits.float())
            scaler.scale(loss).backward()
            if fixed:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 12)
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                            logits=logits, batch_size=B, inputs=tokens[idx])
            scaler.step(optimizer)
            scaler.update()
