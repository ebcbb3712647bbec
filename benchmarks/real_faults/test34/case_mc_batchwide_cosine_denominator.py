"""Hand-written cosine similarity divides by the norm of the whole batch, not of each embedding.

What the user did: aligned frozen-backbone patch tokens (flamingo-pytorch PerceiverResampler -> mean over latents ->
linear projection) with pooled caption features (linear projection), CLIP-style: a learnable logit scale initialised
at 1/0.07 and a symmetric InfoNCE over the image x text similarity matrix. Instead of `F.normalize` the user wrote
their own batched cosine similarity,

    sim = x @ y.T / sqrt(sum(x ** 2) * sum(y ** 2))

with the sums taken over the whole tensor, exactly DeepChem's `_cosine_dist` in deepchem/deepchem#2022.

What went wrong and why: the denominator is the product of the Frobenius norms of the two batches, one scalar for
the whole matrix, instead of the product of each pair's row norms. With B rows of similar length every entry is
divided by about B times too much: sim_ij ~ cos_ij / B, so with B = 32 the logits are cos * 14.3 / 32 ~ 0.45 * cos,
an effective temperature of ~2.2 instead of 0.07. The rows are never unit vectors, and no reweighting of the rows
helps much (scaling all rows scales numerator and denominator alike; the squared row norms share a fixed total), so
the softmax over candidates stays nearly uniform and the loss stays high, ~0.87 ln(B). The learnable logit scale would have to
grow ~32x, far more than 100 AdamW steps at lr 1e-3 move it. As the issue says: "The denominator should not be equal
for every computed similarity value. It should be specific for each pair of vectors"; the maintainer confirmed it as
a bug of a function written for single vectors and not batched correctly.

Fix (fixed=True): divide by the per-row norms (x.norm(dim=1, keepdim=True), the issue's proposed fix), i.e. unit
embeddings before the dot product.

Validation (validate.py, seeds 0/1/2, B=32, 100 steps, final loss / ln(32)):
  fault: 0.8756 / 0.8740 / 0.8729   (final loss 3.0347 / 3.0292 / 3.0254; ln(32) = 3.4657)
  fixed: 0.0243 / 0.0278 / 0.0258   (final loss 0.0841 / 0.0962 / 0.0893)

Ground truth: not_normalised.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("deepchem/deepchem#2022",)
CAUSE = "not_normalised"
FAMILY = "normalisation and temperature"

B = 32


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.img_proj = nn.Linear(D, E)
        self.txt_proj = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]      # (B, T, D) -> (B, latents, D)
        return self.img_proj(lat.mean(1)), self.txt_proj(texts)


def cosine_sim(x, y):
    """Cosine similarity of every row of x with every row of y (the DeepChem version)."""
    denom = torch.sqrt(torch.sum(x ** 2) * torch.sum(y ** 2)) + 1e-7
    return x @ y.t() / denom


def cosine_sim_fixed(x, y):
    """The issue's fix: each pair divided by its own two norms."""
    denom = x.norm(dim=1, keepdim=True) @ y.norm(dim=1, keepdim=True).t() + 1e-7
    return x @ y.t() / denom


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = Aligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sim_fn = cosine_sim_fixed if fixed else cosine_sim
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        tok, txt_in = tokens[idx], texts[idx]
        img, txt = model(tok, txt_in)
        logits = model.logit_scale.exp() * sim_fn(img, txt)
        loss = clip_loss(logits)

        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tok)
        optimizer.step()
    session.close()
