"""Both layers of the new image projector zero-initialised, ControlNet style: no gradient ever reaches them.

What the user did: a vision->text alignment model over frozen patch tokens: a flamingo-pytorch
PerceiverResampler, mean over its latents, then a new two-layer projector (Linear -> GELU -> Linear) into
the shared space; an MLP over the pooled caption features on the text side; both L2-normalised, a learnable
logit scale (open_clip's init), CLIP's symmetric InfoNCE. To let the new projector "start silent and grow
from zero" the user wraps both of its Linear layers in ControlNet's `zero_module` (weights and biases set
to 0), the trick ControlNet uses for its zero convolutions.

What went wrong and why: ControlNet's argument that a zero layer still learns needs a non-zero input to
that layer. Here the second zero layer's input is GELU(first zero layer) = GELU(0) = 0, so its weight
gradient (upstream gradient times input) is exactly 0, and the first layer's upstream gradient passes
through the second layer's zero weight, so its weight gradient is exactly 0 too, and so is everything the
resampler receives through it. Neither weight ever moves; only the last bias learns, and it is the same
vector for every image. After L2 normalisation all image embeddings are one identical row: every caption
scores the same against all images, so the loss cannot go below ln(B) however the text side and the logit
scale move. Nothing is NaN and no parameter is frozen or missing from the optimizer: the gradient is
exactly zero by construction.

Thread: lllyasviel/ControlNet#510 (a user points out that a zero-initialised `proj_out` feeding a zero
convolution gives a zero input to the zero convolution, so the "x != 0" premise behind the zero-conv
gradient argument fails and the gradient of the pair is zero).

Fix (fixed=True): keep PyTorch's default (Kaiming-uniform) initialisation for the projector layers (a
zero-initialised last layer alone would still receive gradient; two zero layers in a row never do).

Validation (benchmarks/real_faults/validate.py --half test25, B=32, 100 steps, final = mean of last 5
logged losses, ln(32) = 3.4657):
  seed 0: fault 3.4719 (ratio 1.0018), fixed 0.1559 (ratio 0.0450)
  seed 1: fault 3.4727 (ratio 1.0020), fixed 0.1951 (ratio 0.0563)
  seed 2: fault 3.4761 (ratio 1.0030), fixed 0.1564 (ratio 0.0451)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("lllyasviel/ControlNet#510",)
CAUSE = "no_gradient_path"
FAMILY = "initialisation"

B = 32


def zero_module(module: nn.Module) -> nn.Module:
    """ControlNet / guided-diffusion helper: zero out the parameters of a module and return it."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class Aligner(nn.Module):
    def __init__(self, zero_init: bool):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        first, second = nn.Linear(D, E), nn.Linear(E, E)
        if zero_init:
            first, second = zero_module(first), zero_module(second)
        self.projector = nn.Sequential(first, nn.GELU(), second)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]       # (B, T, D) -> (B, latents, D)
        img = F.normalize(self.projector(lat.mean(1)), dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner(zero_init=not fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=len(img), inputs=tokens[idx])
        optimizer.step()
        optimizer.zero_grad()
    session.close()
