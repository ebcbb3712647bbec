"""Mixed precision: gradients clipped while they are still multiplied by the GradScaler's scale.

What the user did: a vision->text alignment loop (flamingo-pytorch PerceiverResampler over frozen patch
tokens, a text projection, symmetric CLIP loss) moved to automatic mixed precision: fp16 autocast, a
`GradScaler`, `scaler.scale(loss).backward()`, and the gradient clipping they already had
(`clip_grad_norm_(model.parameters(), 1.0)`) left right after the backward, then `scaler.step(opt)`.
SGD with momentum, as in their fp32 run.

What went wrong and why: after `scaler.scale(loss).backward()` every gradient is multiplied by the scale
(65536 at the start). `clip_grad_norm_` measures that inflated norm (~1e4-1e5) and rescales all gradients
so that the *scaled* norm is 1.0; `scaler.step` then divides by 65536, so the optimizer applies a
gradient of total norm ~1.5e-5. Every update is ~65536x smaller than intended: the weights barely move
and the CLIP loss stays at (above) chance for the whole run. The thread: "the loss converged very slow
... `clip_gradients` is executed right after backward, but `scaler.unscale_` is conducted in
pre_optimization_step ... may lead to a very flat learning curve"; the PyTorch AMP docs and the maintainers'
fix: call `scaler.unscale_(optimizer)` before clipping.

Threads: Lightning-AI/pytorch-lightning#9599 (clip norm after scaler.unscale_ in native fp16 training;
confirmed and fixed in Lightning 1.4.9), milesial/Pytorch-UNet#468 (gradients are clipped before the
unscaling; fixed by the PR adding `scaler.unscale_`).

Fix (fixed=True): `scaler.unscale_(optimizer)` before `clip_grad_norm_`.

Validation (validate.py, 100 steps, B=32, ln B = 3.4657; final loss / ln B):
fault seed 0/1/2: 1.480 / 1.399 / 1.440 (loss ~5.0, above chance: the logit scale sharpens random rows);
fixed seed 0/1/2: 0.021 / 0.010 / 0.021.

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("Lightning-AI/pytorch-lightning#9599", "milesial/Pytorch-UNet#468")
CAUSE = "learning_rate_too_low"
FAMILY = "mixed precision"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu")
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        with torch.autocast("cpu", dtype=torch.float16):
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits.float())
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if fixed:
            scaler.unscale_(optimizer)  # the fix: clip the real gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        scaler.step(optimizer)
        scaler.update()
    session.close()
