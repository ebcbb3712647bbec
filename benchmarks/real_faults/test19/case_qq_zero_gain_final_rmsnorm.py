"""Zero-initialised gain on both towers' final RMSNorm: zero embeddings, zero gradients, loss pinned at ln(B).

What the user did: a two-tower aligner (flamingo-pytorch PerceiverResampler over frozen-backbone patch tokens
for images, an MLP over caption features for text), each tower ending CLIP-style in a final norm and a bias-free
projection. For the final norms they wrote their own RMSNorm and gave it the gain-centred initialisation of
Gemma-style norms (weight initialised to zeros, because those models apply the norm as `x_hat * (1 + weight)`),
but their forward multiplies by the weight alone.

What went wrong and why: the effective gain is zero at initialisation, so each final norm outputs zeros, both
projections output zeros and `F.normalize` returns zero vectors: every logit is 0 and the loss is exactly ln(B).
This is the bug pytorch/torchtitan#4489 fixed in a model's final output norm (gain centred on 0 inheriting the
zero weight initialisation, hence zero effective scale, zero final hidden states and logits, and zero gradients
for everything behind and after the norm on the first backward). In a language model the cross-entropy still
pushes the norm's own weight away from zero; in a two-tower contrastive loss it does not: the gradient reaching
each tower's embedding is a sum over the other tower's embeddings, which are all zero, so every parameter,
the norm gains included, gets an exactly zero gradient on every step. The run sits at the saddle forever.

Fix (pytorch/torchtitan#4489): initialise the final norm's weight to one, so its initial effective scale is one
(equivalently, apply the gain as 1 + weight when it is initialised to zero).

Validation (validate.py --half test19, 100 steps, B=32, final = mean of the last 5 logged losses / ln 32):
  fault: seed 0 1.0000, seed 1 1.0000, seed 2 1.0000 (loss exactly ln 32 = 3.4657 at every step)
  fixed: seed 0 0.0353, seed 1 0.0432, seed 2 0.0388 (final 0.1224, 0.1499, 0.1345)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("pytorch/torchtitan#4489",)
CAUSE = "no_gradient_path"
FAMILY = "initialisation"


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, unit_gain: bool = False):
        super().__init__()
        self.eps = eps
        # gain-centred init, as in Gemma-style norms
        self.weight = nn.Parameter(torch.ones(dim) if unit_gain else torch.zeros(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class TwoTowerAligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.image_norm = RMSNorm(D, unit_gain=fixed)
        self.image_proj = nn.Linear(D, E, bias=False)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.text_norm = RMSNorm(E, unit_gain=fixed)
        self.text_proj = nn.Linear(E, E, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = self.image_proj(self.image_norm(self.resampler(tokens.unsqueeze(1))[:, 0].mean(1)))
        txt = self.text_proj(self.text_norm(self.text(texts)))
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    tokens, texts = token_pairs(2048, seed)
    torch.manual_seed(seed)
    model = TwoTowerAligner(fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=gen)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                        logits=logits, batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
