"""A hand-rolled RMSNorm whose scale is initialised to zeros: both towers output the zero vector.

What the user did: a CLIP-shaped two-tower aligner trained from scratch. Image side: frozen-backbone patch tokens ->
flamingo-pytorch PerceiverResampler -> mean over latents -> a final norm (CLIP's ln_post) -> bias-free projection.
Text side: pooled caption features -> Linear + GELU -> final norm (CLIP's ln_final) -> bias-free projection. Both
norms are the user's own RMSNorm class, copied from a JAX codebase, whose `__init__` creates the scale with zeros
while `forward` multiplies the normalised input by that scale, the copy-paste bug reported in
google-research/timesfm#481: "`RMSNorm.__init__` ... initializes `self.scale` with `jnp.zeros` instead of
`jnp.ones`"; since the call multiplies by the scale, "this makes RMSNorm output all zeros on a fresh forward pass",
which the PR notes is masked at inference by loading a checkpoint but hits any from-scratch training.

What went wrong and why: each norm outputs exactly zero, so with bias-free projections both embeddings are the zero
vector (F.normalize leaves it at zero), every logit is 0 and the loss is exactly ln(B). The gradient is exactly zero
everywhere: d loss / d image embedding is a weighted sum of text embeddings (all zero) and vice versa, so nothing
comes back into either tower; the projections' gradient is that zero times their zero input, the norm scales' is that
zero times the normalised input, everything below the norms is further multiplied by the zero scales, and the logit
scale's gradient multiplies the zero similarities. Since every gradient is exactly 0, AdamW's update is exactly 0 too (weight decay only shrinks the other weights), so the run never
leaves the all-zero point: a fixed point created by the initialisation, with no path for any gradient.

Fix (fixed=True): initialise the scale with ones (the fix the PR proposes, matching the LayerNorm next to it), i.e.
the identity at init as in torch.nn.RMSNorm.

Validation (validate.py, seeds 0/1/2, B=32, 100 steps, final loss / ln(32)):
  fault: 1.0000 / 1.0000 / 1.0000   (final loss 3.4657 on every seed, exactly ln(32), from step 0)
  fixed: 0.0407 / 0.0410 / 0.0393   (final loss 0.1411 / 0.1419 / 0.1362)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("google-research/timesfm#481",)
CAUSE = "no_gradient_path"
FAMILY = "initialisation"

B = 32


class RMSNorm(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-6, scale_init=torch.zeros):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(scale_init(num_features))

    def forward(self, x):
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed * self.scale


class TwoTower(nn.Module):
    def __init__(self, scale_init):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.ln_post = RMSNorm(D, scale_init=scale_init)
        self.visual_projection = nn.Linear(D, E, bias=False)
        self.text_mlp = nn.Sequential(nn.Linear(DT, D), nn.GELU())
        self.ln_final = RMSNorm(D, scale_init=scale_init)
        self.text_projection = nn.Linear(D, E, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]      # (B, T, D) -> (B, latents, D)
        img = self.visual_projection(self.ln_post(lat.mean(1)))
        txt = self.text_projection(self.ln_final(self.text_mlp(texts)))
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = TwoTower(scale_init=torch.ones if fixed else torch.zeros)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        tok, txt_in = tokens[idx], texts[idx]
        img, txt = model(tok, txt_in)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)

        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tok)
        optimizer.step()
    session.close()
