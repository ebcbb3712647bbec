"""Optimizer setup: the model is run through a BatchNorm -> GroupNorm "fixer" that returns a *copy*, after
the optimizer was built on the original, so the optimizer steps a model nobody runs.

What the user did: an image-text aligner (flamingo-pytorch PerceiverResampler over frozen-backbone patch
tokens, a SimCLR-style projection head Linear -> BatchNorm1d -> ReLU -> Linear, a linear text projection,
a learnable logit scale) that they want to train with differential privacy later. BatchNorm mixes samples, so
they run the model through Opacus' `ModuleValidator.fix` to swap every BatchNorm for a GroupNorm, as the
Opacus tutorials say, but they do it at the end of their setup block, after `optimizer = AdamW(model.parameters())`:

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model = ModuleValidator.fix(model)        # BatchNorm -> GroupNorm

What goes wrong and why: `ModuleValidator.fix` does not edit the model in place: it first clones the whole
module (`module = clone_module(module)`, a deep copy) and then replaces the BatchNorm sub-modules in the
copy. Every parameter of the returned model is a new tensor; the optimizer's param groups still hold the
parameters of the original instance, which is no longer called. `loss.backward()` fills `.grad` of the new
model's parameters (and `optimizer.zero_grad()` clears only the old ones, so they pile up step after step),
`optimizer.step()` walks the old ones (which never get a gradient, so Adam does not even move them), and the
model that produces the logits never changes: the CLIP loss stays at its first value (above ln(B): the random
model is confidently wrong at logit scale 1/0.07) from the first step to the last. No error, no warning
(Opacus' `make_private` later got a check for exactly this: opacus#432, implemented in PR #439). Opacus is not
installed here, so `dp_fix` below does what `ModuleValidator.fix` does (clone, then replace each BatchNorm by
`GroupNorm(gcd(32, C), C)`).

Threads: meta-pytorch/opacus#431 (training fails after `model = ModuleValidator.fix(model)`), where the
maintainer answers that the code fails "because `model = ModuleValidator.fix(model)` is called after passing
`model.parameters()` to optimizer ... the parameters of these new layers are not tracked by optimizer. Calling
`fix()` before defining optimizer should work", recorded as meta-pytorch/opacus#432 (warn or raise when the
optimizer's params are not the module's).

Fix (fixed=True): call the fixer first, then build the optimizer on the model that is trained.

Validation (validate.py, 100 steps, B=32, final = mean of the last 5 CLIP losses, ln(32) = 3.4657):
fault final/ln(B) = 1.543, 1.686, 1.240 (seeds 0, 1, 2; the loss stays at its first value, 5.35, 5.84, 4.30);
fixed = 0.151, 0.164, 0.105.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from common import DT, D, E, clip_loss, token_pairs
from torch import nn

THREADS = ("meta-pytorch/opacus#431", "meta-pytorch/opacus#432")
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer setup"


class ResamplerBNAligner(nn.Module):
    """Patch tokens -> PerceiverResampler -> mean over latents -> MLP head with BatchNorm; text -> Linear."""

    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.head = nn.Sequential(nn.Linear(D, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, E))
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        img = self.head(lat.mean(1))
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def dp_fix(module: nn.Module) -> nn.Module:
    """What opacus' ModuleValidator.fix does: clone the module, then swap each BatchNorm for a GroupNorm."""
    module = copy.deepcopy(module)
    for name, sub in list(module.named_modules()):
        if isinstance(sub, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            setattr(parent, name.rsplit(".", 1)[-1],
                    nn.GroupNorm(math.gcd(32, sub.num_features), sub.num_features, affine=sub.affine))
    return module


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerBNAligner()
    if fixed:
        model = dp_fix(model)                                     # fix first ...
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        model = dp_fix(model)                                     # ... not after the optimizer is built
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        perm = torch.randperm(len(tokens), generator=g)
        for i in range(0, len(tokens) - B + 1, B):
            if step >= steps:
                break
            idx = perm[i:i + B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tokens[idx])
            optimizer.step()
            step += 1
    session.close()
