"""Projection layers constructed inside `forward()`: they are never registered, never optimised, and are
redrawn at random on every call.

What the user did: a patch-token -> text alignment model (flamingo-pytorch PerceiverResampler over frozen
patch tokens, mean over latents, then a projection into the shared space; a small MLP over the pooled text
features) written the way the reporter of pytorch/pytorch#1291 wrote his `ThreeLayerNet`: the layers that
carry weights are created where they are used, in `forward`
(`img = nn.Linear(D, E)(pooled)`, `txt = nn.Sequential(nn.Linear(DT, E), ...)(texts)`), and only the
resampler and the logit scale are attributes set in `__init__`. The optimizer is built from
`model.parameters()` as usual.

What went wrong and why: `nn.Module` registers a sub-module only when it is assigned as an attribute
(`__setattr__`); a layer built inside `forward` is a brand-new module on every call, so (1) its weights
never appear in `model.parameters()` and are in no optimizer param group, although autograd does compute
gradients for them on each step, and (2) it is re-initialised at random on every forward. The image and
text embeddings therefore pass through a different random projection each step: whatever the resampler
learns is scrambled by the next draw, and the text side is pure noise. The loss never leaves chance
(above ln B at the initial logit scale 1/0.07).

Thread: pytorch/pytorch#1291 ("`list(model.parameters())` behaves differently for custom nn.module"):
the layers defined in `forward` do not show up in `parameters()`, while the same network lists them when
they are created in `__init__` as instance attributes (the reporter's two snippets); the issue was closed on
that behaviour, which is by design: only attributes are registered.

Fix (fixed=True): create the projection layers once in `__init__` as attributes, so they are registered,
handed to the optimizer and kept between steps.

Validation (validate.py --half test32, 100 steps, B=64, final loss / ln B):
  fault: seed 0 1.2875, seed 1 1.2644, seed 2 1.2327 (loss 5.13-5.35 vs ln 64 = 4.159)
  fixed: seed 0 0.0476, seed 1 0.0569, seed 2 0.0472

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("pytorch/pytorch#1291",)
CAUSE = "param_not_in_optimizer"
FAMILY = "architecture"


class PatchTextAligner(nn.Module):
    def __init__(self, define_layers_in_init: bool = False):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.define_layers_in_init = define_layers_in_init
        if define_layers_in_init:  # the fix: registered sub-modules, built once
            self.img_proj = nn.Linear(D, E)
            self.txt_proj = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))

    def forward(self, tokens, texts):
        pooled = self.resampler(tokens.unsqueeze(1))[:, 0].mean(1)  # (B, T, D) -> (B, latents, D) -> (B, D)
        if self.define_layers_in_init:
            img = self.img_proj(pooled)
            txt = self.txt_proj(texts)
        else:  # the user's code: layers built where they are used
            img = nn.Linear(D, E)(pooled)
            txt = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))(texts)
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    B = 64
    model = PatchTextAligner(define_layers_in_init=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    try:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            x, t = tokens[idx], texts[idx]
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=x)
            optimizer.step()
            optimizer.zero_grad()
    finally:
        session.close()
