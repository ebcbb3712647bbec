"""Optimizer setup: transformers' Adafactor built with `relative_step=True, warmup_init=True` (and so
`lr=None`), the combination the user lands on after the documented settings raise: the step size is then
1e-6 x step (times the parameter RMS), ~1e-5 after 100 steps, and the weights never move.

What the user did: a resampler aligner (flamingo-pytorch PerceiverResampler over frozen-backbone patch
tokens, mean over latents, linear image and text projections, learnable logit scale) trained with a
symmetric CLIP loss and `transformers.optimization.Adafactor` to save optimizer memory. The Adafactor
docstring of the time recommended `Adafactor(model.parameters(), lr=1e-3, relative_step=False,
warmup_init=True)`, which raises ("warmup_init requires relative_step=True"); setting
`relative_step=True` then raises "Cannot combine manual lr and relative_step", so the user drops `lr`:
`Adafactor(params, lr=None, relative_step=True, warmup_init=True)` runs without a complaint.

What went wrong and why: with `relative_step=True` Adafactor ignores any external learning rate and uses
its own time-dependent step `min(1e-6 * t, 1/sqrt(t))` when `warmup_init=True` (min(1e-2, 1/sqrt(t))
without it), multiplied by the parameter's RMS (`scale_parameter=True`, floored at 1e-3). That warm-up is
meant for ~10k-step pre-training runs: after 100 steps the relative step is 1e-4, i.e. an absolute step of
~1e-5 on weights of RMS ~0.1 (1e-7 on zero-initialised biases), and the CLIP loss never comes down to
ln(B) (it starts above it, 4.8-5.2: the random projections at logit scale 1/0.07 score worse than uniform,
and it is still there after 100 steps). huggingface/transformers#7789 reported that
the documented settings are impossible; huggingface/transformers#10526 rewrote the docs, with
`relative_step=False, scale_parameter=False, warmup_init=False, lr=1e-3` as the recommended fine-tuning
setting; jettify/pytorch-optimizer#535 spells out the relative-step formula (the user's lr is ignored,
1e-6 * step with warmup_init).

The fix (the docs' recommendation from #10526): an explicit learning rate with relative updates off,
`Adafactor(params, lr=1e-3, relative_step=False, scale_parameter=False, warmup_init=False)`.

Validation (benchmarks/real_faults/validate.py, seeds 0/1/2, 100 steps, B = 32, ln(B) = 3.466):
fault final loss 4.7351 / 4.5298 / 4.6228 (ratio 1.3663 / 1.3070 / 1.3339); fixed 0.0664 / 0.0754 / 0.0669
(ratio 0.0192 / 0.0218 / 0.0193).

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch
from transformers.optimization import Adafactor

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/transformers#7789", "huggingface/transformers#10526", "jettify/pytorch-optimizer#535")
CAUSE = "learning_rate_too_low"
FAMILY = "optimizer setup"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    if fixed:
        optimizer = Adafactor(model.parameters(), lr=1e-3, relative_step=False, scale_parameter=False,
                              warmup_init=False)
    else:
        # lr=1e-3 with relative_step=False, warmup_init=True (the documented setting) raises; so does lr=1e-3
        # with relative_step=True, so the lr goes
        optimizer = Adafactor(model.parameters(), lr=None, relative_step=True, warmup_init=True)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=gen)
        tok, txt = tokens[idx], texts[idx]
        img, tx = model(tok, txt)
        logits = model.logit_scale.exp() * img @ tx.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": tx}, logits=logits,
                        batch_size=B, inputs=tok)
        optimizer.step()
    session.close()
