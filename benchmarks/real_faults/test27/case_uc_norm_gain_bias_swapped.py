"""A hand-written LayerNorm with its gain and bias initialisers swapped: every embedding is the same vector.

What the user did: a resampler aligner (flamingo-pytorch PerceiverResampler over the frozen backbone's
patch tokens, mean over the latents) with a CLIP-tutorial projection head on each tower (Linear -> GELU
-> Linear -> dropout -> residual -> norm), trained with a CLIP loss and a learnable logit scale. The norm
is their own module, ported from the GPT-2 `Norm` (mean/variance over the last axis, then `x * g + b`),
and its two parameters were created the wrong way round: `g = zeros`, `b = ones`.

What went wrong and why: with g = 0 the norm ignores its input and returns b, the all-ones vector, for
every sample; the head's last layer is that norm, so every image embedding is the same unit vector and
so is every text embedding. All B x B logits are equal and the loss is ln(B) exactly. The gradient is
zero as well, up to round-off: for each image row, sum_j (p_ij - 1[i=j]) * txt_j vanishes when all txt_j
are equal (the same for the text rows and the logit scale), nothing upstream of the norm gets anything
through g = 0, and the gradient of g itself is the normalised input times that zero. Adam gets ~1e-14
gradients on g and b: the loss reads 4.1589 = ln(64) for the first ~55 steps on every seed; then
round-off grown through Adam's normalisation makes g ~1e-2, the rows begin to differ and the loss only
starts to move: still 0.97-0.98 ln(B) at step 100, 3.30-3.37 at step 150 (the fixed run is at 0.04 ln(B)
by step 100).

Thread: google/objax#94 ("Initialize layer-norm properly": "g should be initialized with ones and b with
zeros. Looks like an accidental swap. Otherwise, this layer starts out outputting 1 instead of x."; merged,
it swaps `TrainVar(np.zeros(n_state))` / `TrainVar(np.ones(n_state))` back in the GPT-2 example's `Norm`).

Fix (fixed=True): g = ones, b = zeros, so the norm starts as the identity on normalised inputs.

Validation (validate.py, seeds 0/1/2, 100 steps, B=64, final = mean of the last 5 losses, ln(64)=4.159):
fault final/ln(B) = 0.979 / 0.973 / 0.978 (losses 4.070 / 4.048 / 4.066, first 4.1589 on every seed);
fixed 0.035 / 0.045 / 0.033 (0.146 / 0.188 / 0.138). About 1.3 s a run on one CPU thread.

Ground truth: embedding_collapse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from common import DT, D, E, clip_loss, token_pairs
from torch import nn

THREADS = ("google/objax#94",)
CAUSE = "embedding_collapse"
FAMILY = "initialisation"

B = 64


class Norm(nn.Module):
    """Layer norm over the last axis with a gain g and a bias b (the GPT-2 example's Norm)."""

    def __init__(self, n_state: int, axis: int = -1, epsilon: float = 1e-5, fixed: bool = False):
        super().__init__()
        if fixed:
            self.g = nn.Parameter(torch.ones(n_state))
            self.b = nn.Parameter(torch.zeros(n_state))
        else:  # the user's lines
            self.g = nn.Parameter(torch.zeros(n_state))
            self.b = nn.Parameter(torch.ones(n_state))
        self.axis = axis
        self.epsilon = epsilon

    def forward(self, x):
        u = x.mean(self.axis, keepdim=True)
        s = (x - u).pow(2).mean(self.axis, keepdim=True)
        x = (x - u) * torch.rsqrt(s + self.epsilon)
        return x * self.g + self.b


class ProjectionHead(nn.Module):
    def __init__(self, d_in: int, d_out: int = E, dropout: float = 0.1, fixed: bool = False):
        super().__init__()
        self.projection = nn.Linear(d_in, d_out)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = Norm(d_out, fixed=fixed)

    def forward(self, x):
        projected = self.projection(x)
        x = self.fc(self.gelu(projected))
        x = self.dropout(x) + projected
        return self.layer_norm(x)


class ResamplerAligner(nn.Module):
    def __init__(self, fixed: bool = False):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.image_head = ProjectionHead(D, fixed=fixed)
        self.text_head = ProjectionHead(DT, fixed=fixed)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]  # (B, T, D) -> (B, latents, D)
        img = F.normalize(self.image_head(lat.mean(1)), dim=-1)
        txt = F.normalize(self.text_head(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(n=1024, seed=seed)
    model = ResamplerAligner(fixed=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
