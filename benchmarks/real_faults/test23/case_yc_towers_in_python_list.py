"""Dual-encoder whose two towers are kept in a plain Python list: their weights never reach the optimizer.

What the user did: a CLIP-style aligner built the way the deep-generative-models example the thread is about
builds its stack of networks: the towers are constructed outside the model and handed to it as a list,
`DualEncoder([image_tower, text_tower])`, which stores them as `self.towers = towers` (a Python `list`). The
image tower is a flamingo-pytorch PerceiverResampler over frozen-backbone patch tokens plus a projection, the
text tower a small MLP over pooled text features; the logits are `exp(logit_scale) * img @ txt.T` on unit
rows and the loss is the symmetric InfoNCE. The optimizer is the usual `AdamW(model.parameters())`.

What went wrong and why: `nn.Module.__setattr__` registers a sub-module only when the attribute *is* a
module (or a ModuleList/ModuleDict/Sequential); a plain list is stored as an ordinary attribute, so neither
tower shows up in `model.parameters()` (nor in `state_dict`, `.to()`, `.train()`). The forward pass still
uses both towers and `loss.backward()` fills their `.grad`, but the optimizer was built from
`model.parameters()`, which holds only `logit_scale`: the towers keep their random initial weights for the
whole run and the only thing that moves is the temperature. With random towers the matched caption scores
no higher than any other, so the loss stays at or above ln(B); AdamW only walks `logit_scale` slowly down
toward the value that minimises the loss of uninformative logits.

Threads: jmtomczak/intro_dgm#6 (the DDGM example stores its networks with `self.p_dnns = p_dnns`, a list,
"the p_dnns networks are not added in the learned parameters and are left unoptimized"; the fix is
`nn.ModuleList(p_dnns)`), pytorch/pytorch#59925 (modules kept in a list are silently not registered, so
"optimizers may silently fail to update parameters of those modules").

Fix (fixed=True): `self.towers = nn.ModuleList(towers)`: the towers' weights are registered and reach
AdamW.

Validation (validate.py --half test23, seeds 0/1/2, 100 steps, B=64, ln(B)=4.159; final = mean of the last
5 steps): fault final loss 6.291 / 5.345 / 5.477, ratio 1.513 / 1.285 / 1.317 (the random towers' rows share
a direction, so at scale ~14 the uninformative logits cost more than ln(B); only logit_scale moves), fixed
0.198 / 0.237 / 0.197, ratio 0.048 / 0.057 / 0.047.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from common import DT, D, E, clip_loss, token_pairs
from torch import nn

THREADS = ("jmtomczak/intro_dgm#6", "pytorch/pytorch#59925")
CAUSE = "param_not_in_optimizer"
FAMILY = "architecture"

B = 64


class ImageTower(nn.Module):
    """Patch tokens -> PerceiverResampler -> mean over latents -> projection."""

    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)

    def forward(self, tokens):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]  # (B, T, D) -> (B, latents, D)
        return self.proj(lat.mean(1))


class DualEncoder(nn.Module):
    def __init__(self, towers, register: bool = False):
        super().__init__()
        # the user's line: a list of towers, like `self.p_dnns = p_dnns` in the thread
        self.towers = nn.ModuleList(towers) if register else towers
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        image_tower, text_tower = self.towers
        img = F.normalize(image_tower(tokens), dim=-1)
        txt = F.normalize(text_tower(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    towers = [ImageTower(), nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))]
    model = DualEncoder(towers, register=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    try:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tokens[idx].mean(1))
            optimizer.step()
    finally:
        session.close()
