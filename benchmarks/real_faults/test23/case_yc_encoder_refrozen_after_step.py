"""Trainable image encoder switched back to requires_grad=False right after its optimizer step: from the second
step on backward never reaches it.

What the user did: LiT-style alignment of images to a locked text tower. The text tower (a projection of
pooled text features) is frozen with `requires_grad_(False)`; the image side, a flamingo-pytorch
PerceiverResampler over frozen-backbone patch tokens plus a projection (`model.encoder`), is what is trained.
As in the repository of the thread, the main optimizer takes `model.parameters()` and the encoder gets an
optimizer of its own (`optim_encoder`, its own learning rate); to keep the main optimizer's hands off the
encoder, the loop unfreezes the encoder around `optim_encoder.step()` and freezes it again right after:

    optimizer.zero_grad(); loss.backward()
    for p in model.encoder.parameters(): p.requires_grad = True
    optim_encoder.step()
    for p in model.encoder.parameters(): p.requires_grad = False
    optimizer.step()

What went wrong and why: `requires_grad` matters when the graph is built and `backward()` runs, not when an
optimizer steps. The flag is flipped back to False at the end of step 0, so every later forward pass builds a
graph without the encoder's weights, `loss.backward()` computes no gradient for them, `optimizer.zero_grad()`
(set_to_none) leaves their `.grad` at None, and `optim_encoder.step()` skips them: the encoder is updated
exactly once (as the issue says: "isn't the crossimage_encoder updated only once during the entire
process?"). Here the encoder is the whole trainable image side and the text tower is locked, so after that
single step only `logit_scale` moves: matched pairs score no higher than others and the loss stays at ln(B).

Thread: Lu-Feng/SuperVLAD#1 (train.py sets the cross-image encoder's requires_grad to True before
`optim_encoder.step()` and back to False after it, after `loss.backward()` already ran, so the encoder is
only updated once).

Fix (fixed=True): the encoder is not re-frozen after its step (its parameters keep requires_grad=True, so
every backward reaches them).

Validation (validate.py --half test23, seeds 0/1/2, 100 steps, B=64, ln(B)=4.159; final = mean of the last
5 steps): fault final loss 4.502 / 4.294 / 4.158, ratio 1.083 / 1.032 / 1.000, fixed 0.179 / 0.210 / 0.162,
ratio 0.043 / 0.051 / 0.039.

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from common import DT, D, E, clip_loss, token_pairs
from torch import nn

THREADS = ("Lu-Feng/SuperVLAD#1",)
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"

B = 64


class ImageEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)

    def forward(self, tokens):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        return self.proj(lat.mean(1))


class LockedTextAligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = ImageEncoder()
        self.text = nn.Linear(DT, E)  # the locked (pretrained) text tower
        self.text.requires_grad_(False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.encoder(tokens), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = LockedTextAligner()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    optim_encoder = torch.optim.Adam(model.encoder.parameters(), lr=1e-3)
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
            for p in model.encoder.parameters():
                p.requires_grad = True
            optim_encoder.step()
            if not fixed:  # the user's line: freeze the encoder again so `optimizer` does not touch it
                for p in model.encoder.parameters():
                    p.requires_grad = False
            optimizer.step()
    finally:
        session.close()
