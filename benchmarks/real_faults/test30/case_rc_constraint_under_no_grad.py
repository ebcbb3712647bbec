"""The only trainable image layer clamps its weights inside `torch.no_grad()` in `forward`: it never trains.

What the user did: aligned a frozen vision backbone to a frozen pretrained text encoder (locked text tower,
LiT-style) through a single learnable image adapter over the mean-pooled patch tokens, trained with the CLIP
loss. The adapter keeps its weights inside a valid range, and, as in leaf-audio-pytorch's `GaborConstraint`,
the constraint is computed under `torch.no_grad()` on every forward:

    with torch.no_grad():
        w = self.weight.clamp(-self.bound, self.bound)
    return x @ w.t() + self.bias

What went wrong and why: the tensor used in the forward pass is produced under `no_grad`, so it is a
constant for autograd: no gradient path leads from the loss back to `self.weight`. The optimizer holds the
weight, its `.grad` stays None and AdamW never moves it (only the bias, which shifts every image alike, and
the logit scale move). The text tower is frozen on purpose, so nothing that could align the two spaces
receives a gradient: the image embeddings remain a fixed random projection of the tokens and the CLIP loss
never gets below chance (it stays above ln(B): unaligned pairs scored with the logit scale of ~1/0.07).

Threads: denfed/leaf-audio-pytorch#3 ("Backpropagation doesn't change weights of the convolutional
layer": the `with torch.no_grad()` in `GaborConstraint.forward`; "removing it I see that weights update")
and the fix, denfed/leaf-audio-pytorch#4 ("Remove torch.no_grad call that breaks backprop on the complex
conv").

Fix (fixed=True): compute the constraint with autograd enabled (the clamp is differentiable inside the
bounds), so the adapter's weight gets its gradient.

Validation (validate.py, B=32, ln B = 3.4657, 100 steps, final = mean of the last 5 logged losses):
  fault: seed 0 4.1502 (1.1975), seed 1 4.4495 (1.2839), seed 2 4.3483 (1.2547)
  fixed: seed 0 0.3607 (0.1041), seed 1 0.5051 (0.1457), seed 2 0.4904 (0.1415)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("denfed/leaf-audio-pytorch#3", "denfed/leaf-audio-pytorch#4")
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"

B, LR = 32, 3e-3


class ConstrainedProjection(nn.Module):
    """Linear adapter whose weights are kept in [-bound, bound] (the user's 'constraint')."""

    def __init__(self, d_in: int, d_out: int, fixed: bool, bound: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) / math.sqrt(d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.bound, self.fixed = bound, fixed

    def forward(self, x):
        if self.fixed:
            w = self.weight.clamp(-self.bound, self.bound)
        else:
            with torch.no_grad():  # the user's line: "the constraint is not learnable anyway"
                w = self.weight.clamp(-self.bound, self.bound)
        return x @ w.t() + self.bias


class FrozenTextEncoder(nn.Module):
    """Stand-in for a pretrained text tower the user locks."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DT, 2 * E), nn.GELU(), nn.Linear(2 * E, E))

    def forward(self, texts):
        return self.net(texts)


class Aligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.adapter = ConstrainedProjection(D, E, fixed)
        self.text_encoder = FrozenTextEncoder().requires_grad_(False)  # locked on purpose
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = F.normalize(self.adapter(tokens.mean(1)), dim=-1)
        txt = F.normalize(self.text_encoder(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed)
    model = Aligner(fixed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed + 1)
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
