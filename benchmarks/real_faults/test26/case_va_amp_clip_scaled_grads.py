"""Mixed precision with a GradScaler, gradients clipped while still scaled: the resampler never moves.

What the user did: a Perceiver-resampler aligner (flamingo-pytorch `PerceiverResampler` over frozen-backbone
patch tokens, mean over latents, linear projection; a linear text projection; CLIP loss with a learnable
logit scale), trained with SGD + momentum and gradient-norm clipping at 1.0. They added automatic mixed
precision the usual way: forward and loss under `torch.autocast` (fp16), `scaler.scale(loss).backward()`,
`scaler.step(optimizer)`, `scaler.update()`, and kept their `clip_grad_norm_(model.parameters(), 1.0)` line
between the backward and the step.

What went wrong and why: after `scaler.scale(loss).backward()` every gradient is multiplied by the loss
scale (65536 at the start). The clip sees a norm ~65536 x the true one and scales the whole gradient down
to norm 1.0; `scaler.step` then divides by 65536 again, so the update the optimizer applies has norm
~1.5e-5 instead of up to 1.0. With SGD that is lr x 1.5e-5 per step: no layer moves, and the CLIP loss
stays at (slightly above) ln(B) for the whole run. Without AMP the same script learns; "AMP gives higher
loss / no convergence" is how users met it.

Threads: speechbrain/speechbrain#612 (LibriSpeech recipes with `auto_mix_prec` trained faster but did not
converge; the gradient clipping ran on scaled gradients, fixed by unscaling first as the PyTorch AMP docs
say), apache/mxnet#15738 ("AMP results in higher loss": the maintainer explains the gradients are scaled by
the loss scale ~65000 and the clip in between does not take the scale into account; use `amp.unscale`).

Fix (fixed=True): `scaler.unscale_(optimizer)` before `clip_grad_norm_`, so the clip sees the true gradient.

Validation (validate.py, B=64, ln(B)=4.1589, 100 steps, final loss / ln(B) on seeds 0, 1, 2):
fault 1.0746 / 1.0724 / 1.3700; fixed 0.0047 / 0.0068 / 0.0038.

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("speechbrain/speechbrain#612", "apache/mxnet#15738")
CAUSE = "learning_rate_too_low"
FAMILY = "mixed precision"

B = 64
N_PAIRS = 2048
LR = 0.1
MAX_GRAD_NORM = 1.0


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(N_PAIRS, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)

    device = "cpu"  # "cuda" on the user's machine; the same AMP calls run on the CPU here
    scaler = torch.amp.GradScaler(device)

    gen = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, N_PAIRS, (B,), generator=gen)
        tok, txt = tokens[idx], texts[idx]
        with torch.autocast(device, dtype=torch.float16):
            img_emb, txt_emb = model(tok, txt)
            logits = model.logit_scale.exp() * img_emb @ txt_emb.t()
            loss = clip_loss(logits)

        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if fixed:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        session.observe(step, losses={"clip": loss}, embeddings={"image": img_emb, "text": txt_emb},
                        logits=logits, batch_size=B, inputs=tok)
        scaler.step(optimizer)
        scaler.update()
    session.close()
