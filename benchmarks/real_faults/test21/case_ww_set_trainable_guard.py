"""Encoders frozen at load time can never be unfrozen: `set_trainable` only touches parameters that
already require grad.

What the user did: an image tower (flamingo-pytorch Perceiver resampler + projection) and a text MLP,
each with a small `set_trainable(trainable)` helper copied from a public repo:

    for p in self.parameters():
        if p.requires_grad:
            p.requires_grad = trainable

The towers are frozen right after they are built/loaded (`set_trainable(False)`, as for a
pretrained encoder); for the alignment stage the script then calls `set_trainable(True)` on both and
builds AdamW over the trainable parameters (`filter(lambda p: p.requires_grad, ...)`).

Why it fails: after the first call every parameter has requires_grad=False, so the `if` guard skips
all of them on the second call: nothing is unfrozen. Only the bare `logit_scale` parameter (not in
either tower) is left trainable; both towers stay at their random weights, receive no gradient, and
the image and text embeddings never become related: the loss stays at ln(B).

Thread: nttcslab/byol-a#7 ("Model parameters cannot be trainable once they become
requires_grad=False ... `if p.requires_grad` has to be removed", labelled bug by the maintainer).
Fix: drop the guard (set requires_grad for every parameter).

Validation (validate.py --half test21, seeds 0/1/2, 100 steps, B=32, ln B = 3.4657): fault final /
ln(B) = 1.5042 / 1.1609 / 1.2345 (random towers under a growing logit scale: above chance); fixed = 0.0407 / 0.0397 / 0.0296.

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("nttcslab/byol-a#7",)
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"


class TrainableMixin:
    guarded = True  # the copied helper; fixed=True removes the guard

    def set_trainable(self, trainable: bool = False) -> None:
        for p in self.parameters():
            if not self.guarded or p.requires_grad:
                p.requires_grad = trainable


class ImageTower(nn.Module, TrainableMixin):
    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)

    def forward(self, tokens):
        return self.proj(self.resampler(tokens.unsqueeze(1))[:, 0].mean(1))


class TextTower(nn.Module, TrainableMixin):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))

    def forward(self, texts):
        return self.net(texts)


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = ImageTower()
        self.text = TextTower()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.image(tokens), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = Aligner()
    for tower in (model.image, model.text):
        tower.guarded = not fixed
        tower.set_trainable(False)  # "load" the encoders frozen
    for tower in (model.image, model.text):
        tower.set_trainable(True)  # alignment stage: fine-tune everything
    optimizer = torch.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-3, weight_decay=0.0)
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
                        batch_size=B)
        optimizer.step()
    session.close()
