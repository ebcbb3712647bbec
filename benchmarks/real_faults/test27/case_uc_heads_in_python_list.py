"""Projection heads whose layers live in a plain Python list: nothing the optimizer sees can learn.

What the user did: aligned frozen-backbone features (pooled patch tokens of a frozen vision encoder,
pooled caption features of a frozen text encoder) by training two small projection heads and a
learnable logit scale with a CLIP loss. The head has a configurable depth, so its `nn.Linear` layers
were built in a loop into a plain Python list assigned to `self.layers`, and the optimizer was built
the usual way, `AdamW(model.parameters())`.

What went wrong and why: `nn.Module.__setattr__` registers modules and parameters only when they are
assigned as attributes (or held by `nn.ModuleList` / `nn.Sequential`); it does not look inside Python
lists. So `model.parameters()` holds only `logit_scale`: every weight of both heads has
`requires_grad=True`, receives a gradient on each `backward()`, and is never stepped, because it is in
no optimizer param group. The two heads stay at their random init, two unrelated random projections of
the features, so the pairs cannot be matched: scored at the initial scale 14.3 the random cosines give
a loss above ln(B), and the only thing that trains is the temperature, which the loss pushes slowly
down toward the uniform softmax. The loss stays at or above ln(B) for the whole run.

Threads: pytorch/pytorch#1053 ("submodules defined in list are not auto-registered as parameters":
after `a.cuda()` the layers held in a list were still on the CPU; apaszke: "This is expected. Use
`nn.ModuleList`"), and dotnet/TorchSharp#532 ("Why does storing module layers in arrays break the
learning process?"; the maintainer: registration "doesn't pick up on arrays, or lists", so those layers'
parameters are not the module's parameters and the optimizer built from them never updates them).

Fix (fixed=True): hold the layers in `nn.ModuleList`, so they are registered, listed by
`model.parameters()` and stepped by the optimizer.

Validation (validate.py, seeds 0/1/2, 100 steps, B=64, final = mean of the last 5 losses, ln(64)=4.159):
fault final/ln(B) = 1.552 / 1.262 / 1.123 (losses 6.452 / 5.250 / 4.668, falling only as the logit scale
shrinks); fixed 0.030 / 0.035 / 0.026 (0.124 / 0.146 / 0.107). Under 0.3 s a run on one CPU thread.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from common import DT, D, E, clip_loss, token_pairs
from torch import nn

THREADS = ("pytorch/pytorch#1053", "dotnet/TorchSharp#532")
CAUSE = "param_not_in_optimizer"
FAMILY = "architecture"

B = 64


class ProjectionHead(nn.Module):
    """MLP head of configurable depth: Linear -> GELU -> ... -> Linear."""

    def __init__(self, d_in: int, d_out: int, depth: int = 2, hidden: int = 64, registered: bool = False):
        super().__init__()
        dims = [d_in] + [hidden] * (depth - 1) + [d_out]
        layers = [nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])]
        # the user's line: a plain list (the fix: nn.ModuleList)
        self.layers = nn.ModuleList(layers) if registered else layers

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.gelu(x)
        return x


class FeatureAligner(nn.Module):
    def __init__(self, registered: bool = False):
        super().__init__()
        self.image_head = ProjectionHead(D, E, registered=registered)
        self.text_head = ProjectionHead(DT, E, registered=registered)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = F.normalize(self.image_head(tokens.mean(1)), dim=-1)
        txt = F.normalize(self.text_head(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(n=1024, seed=seed)
    model = FeatureAligner(registered=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
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
