"""Model built on the meta device, materialised with `to_empty()`, then re-initialised by an
`init_weights()` that only knows Linear and LayerNorm: the resampler's latents and media position
embedding are never initialised, and under deterministic mode they are NaN.

What the user did: a flamingo-pytorch PerceiverResampler aligner (common.ResamplerAligner: resampler ->
mean over latents -> projection, linear text head, learnable logit scale) trained with a symmetric CLIP
loss. To skip the double initialisation of a large model they construct it under
`torch.device("meta")`, call `model.to_empty(device="cpu")` and then their own `init_weights()`, which
walks the modules and sets every `nn.Linear` (truncated normal, zero bias), every `nn.LayerNorm` (ones,
zeros) and the logit scale. For reproducible runs they also call `torch.use_deterministic_algorithms(True)`.

What went wrong and why: `to_empty()` allocates storage without values; everything that `init_weights()`
does not overwrite keeps that uninitialised memory. The resampler's `latents` and `media_pos_emb` are bare
`nn.Parameter`s created with `torch.randn` in the library's constructor (which ran on meta), not Linear or
LayerNorm weights, so they are skipped. With deterministic algorithms on, PyTorch fills uninitialised
memory with NaN (`torch.utils.deterministic.fill_uninitialized_memory`), so the latents are NaN: every
attention output, every embedding and the loss are NaN from the first step, and the NaN gradients turn
every parameter AdamW touches into NaN after the first update. (Without deterministic mode the same bug
leaves whatever garbage was in memory there.)

The threads: karpathy/nanochat#686 (the model is built on meta and materialised with `to_empty()`; two
parameters declared in `__init__` were missing from `init_weights()`, and with
`torch.use_deterministic_algorithms(True)` they became NaN and "loss=nan"); pytorch/torchtitan#2450 (a
router bias that `init_weights` never initialised was filled with NaN under deterministic mode, NaN loss
from step 1). Root cause: parameters left uninitialised; the visible outcome and the closest cause id is
non-finite training.

The fix (fixed=True): `init_weights()` also draws the resampler's latents and media position embedding
(standard normal, as the library's constructor does), as both PRs add the forgotten parameters to
`init_weights`.

Validation (validate.py, seeds 0/1/2, 100 steps, B=32, final loss / ln(B)):
    fault non-finite / non-finite / non-finite (the loss is NaN from step 0 on every seed)
    fixed 0.0225 / 0.0275 / 0.0211 (final 0.078 / 0.095 / 0.073 against ln 32 = 3.466)

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("karpathy/nanochat#686", "pytorch/torchtitan#2450")
CAUSE = "nonfinite_divergence"
FAMILY = "initialisation"

B = 32


def init_weights(model: nn.Module, fixed: bool) -> None:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.07))
    if fixed:  # the fix: initialise the resampler's own parameters too
        nn.init.normal_(model.resampler.latents)
        nn.init.normal_(model.resampler.media_pos_emb)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # the user's reproducibility setting
    try:
        torch.manual_seed(seed)
        tokens, texts = token_pairs(1024, seed=seed)

        with torch.device("meta"):
            model = ResamplerAligner()
        model.to_empty(device="cpu")
        init_weights(model, fixed)

        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        gen = torch.Generator().manual_seed(seed)

        session = watch(model, optimizer, batch_size=B)
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=gen)
            tok, txt_in = tokens[idx], texts[idx]
            img, txt = model(tok, txt_in)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tok)
            optimizer.step()
            optimizer.zero_grad()
        session.close()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
