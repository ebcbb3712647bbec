"""Mixed-precision alignment training that clips the gradients while they are still multiplied by the GradScaler.

What the user did: trained a perceiver-pytorch resampler aligner (patch tokens -> Perceiver latents -> projection,
text features -> MLP, CLIP loss with a learnable temperature) under `torch.autocast(float16)` with a
`GradScaler`, SGD with momentum, and gradient clipping at max_norm 1.0, the loop most trainers had at the time:

    scaler.scale(loss).backward()
    clip_grad_norm_(model.parameters(), 1.0)     # no scaler.unscale_(optimizer) before it
    scaler.step(optimizer); scaler.update()

What went wrong and why: after `scaler.scale(loss).backward()` every gradient is multiplied by the loss scale
(65536 at the start, 32768 after the first overflow). `clip_grad_norm_` sees a total norm of ~1e5, so it rescales
the gradients to norm 1.0 in *scaled* units; `scaler.step` then divides by the scale once more. The gradient the
optimizer applies has norm ~1/32768 (3e-5) instead of up to 1.0, so with SGD at lr 0.1 each update has norm
~3e-6 against weight norms of order 10: the weights do not move and the CLIP loss stays at its initial value (above ln(B), the random
init with temperature 0.07 is confidently wrong). Without autocast/scaling the same clipping trains normally.

Threads: allenai/allennlp#5426 ("A bug that incorrectly clips scaled gradients when we use mixed-precision
training and gradient clipping at the same time", fix for allennlp#5413: unscale first, then clip);
Lightning-AI/pytorch-lightning#18089 (the manual-optimization example clips with `self.clip_gradients` without
unscaling under mixed precision; "the gradients should be unscaled ... before calling clip_gradients"). The
PyTorch AMP recipe: call `scaler.unscale_(optimizer)` before inspecting or clipping gradients.

Fix (fixed=True): `scaler.unscale_(optimizer)` before `clip_grad_norm_`, so the threshold applies to the true
gradients and `scaler.step` does not divide them again.

Validation (benchmarks/real_faults/validate.py, stand-in watch, 100 steps, B=32, ln(B)=3.4657), final loss / ln(B):
    seed 0: fault 1.3162, fixed 0.0380
    seed 1: fault 1.4720, fixed 0.0194
    seed 2: fault 1.4451, fixed 0.0235

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("allenai/allennlp#5426", "Lightning-AI/pytorch-lightning#18089")
CAUSE = "learning_rate_too_low"
FAMILY = "mixed precision"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    device = "cpu"  # the thread's runs were on CUDA; the same AMP calls run on the CPU here
    tokens, texts = token_pairs(1024, seed=seed)
    model = PerceiverAligner().to(device)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler(device)
    max_grad_norm = 1.0

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        x, t = tokens[idx].to(device), texts[idx].to(device)
        with torch.autocast(device_type=device, dtype=torch.float16):
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)

        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if fixed:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=x)
        scaler.step(optimizer)
        scaler.update()
    session.close()
