"""fp16 autocast with a GradScaler, and the gradients clipped while they are still scaled: training halts.

What the user did: a frozen-backbone alignment loop (patch tokens -> flamingo-pytorch PerceiverResampler ->
projection, text features -> projection, CLIP loss) trained in fp16 autocast with `GradScaler`, SGD with
Nesterov momentum, and gradient clipping at the usual max_norm 1.0. They wrote the step as
`scaler.scale(loss).backward(); clip_grad_norm_(model.parameters(), 1.0); scaler.step(optimizer);
scaler.update()`, i.e. without `scaler.unscale_(optimizer)` before the clip.

What went wrong and why: after `scaler.scale(loss).backward()` every gradient is multiplied by the loss
scale (65536 at the start, 8192-65536 later). `clip_grad_norm_` measures that scaled norm, which is far
above 1.0, and rescales the gradients so the *scaled* norm is 1.0; `scaler.step` then divides by the scale
again. The true gradient that reaches the optimizer has norm 1/scale (~1.5e-5 to 1.2e-4) instead of
~0.1-1: every update is 3-4 orders of magnitude smaller than intended, the weights barely move and the
loss stays where the random initialisation put it. The effective threshold also drifts with the
dynamic scale. (With an adaptive optimizer the shrink is partly undone by the normalisation until the
per-element gradients fall below Adam's eps; the threads' large models, e.g. a Stable Diffusion UNet,
were there, hence "effectively halting training". Here the user's SGD shows it directly.)

Threads:
- victorchall/EveryDream2trainer#175: with AMP, clip_grad_scale was applied to the scaled gradients, so a
  value like 1e5-1e6 was needed instead of the usual 1.0, and the usual value "effectively halted
  training"; fixed by unscaling before clipping.
- pytorch/examples#1196: the minGPT-DDP trainer clips without `scaler.unscale_(optimizer)`; the AMP docs
  require unscaling before inspecting or modifying gradients.

Fix (fixed=True): `scaler.unscale_(optimizer)` before `clip_grad_norm_`, as the AMP recipe says.

Validation (validate.py, 100 steps, B=32, final loss = mean of the last 5 steps, ln(32) = 3.4657):
- fault: final/ln(B) = 1.501, 1.419, 1.462 on seeds 0, 1, 2 (the loss never leaves its initial ~5.0;
  on seed 0 the median weight tensor moved by 8.5e-5 of its norm over the 100 steps);
- fixed: final/ln(B) = 0.003, 0.006, 0.008 (median weight tensor moved by 0.18 of its norm).

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("victorchall/EveryDream2trainer#175", "pytorch/examples#1196")
CAUSE = "learning_rate_too_low"
FAMILY = "mixed precision"

B = 32
LR = 0.05
MAX_GRAD_NORM = 1.0


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True)
    scaler = torch.amp.GradScaler("cpu")

    g = torch.Generator().manual_seed(seed)
    with watch(model, optimizer, batch_size=B) as session:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            with torch.autocast("cpu", dtype=torch.float16):
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            if fixed:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                            logits=logits, batch_size=B, inputs=tokens[idx])
            scaler.step(optimizer)
            scaler.update()
