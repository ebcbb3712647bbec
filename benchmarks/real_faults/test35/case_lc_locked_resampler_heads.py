"""Locked-image tuning with a flamingo-pytorch PerceiverResampler: the resampler is frozen and wrapped in a
module that adds the new trainable image and text heads and the logit scale, but the optimizer is built from
the wrapped resampler's parameters. The heads get gradients on every step and never move: the only trainable
part of the model stays frozen at its random init and the CLIP loss stays at (above) ln(B).

What the user did: in ImKeTT/PCAE#5 the fine-tuning script wraps the pretrained model (`vae = VAE(model)`,
where the VAE adds its own `self.z_linear = nn.Linear(...)`) and then builds the optimizer as
`AdamW(model.parameters(), ...)`: "this means the optimizer only optimizes the parameters in `model`, i.e.
the BART model ... the linear layer `z_linear` defined in class VAE ... is not optimized by the optimizer"
(translated). The maintainer: "you are right! And this should explain #3" (the run that would not converge).
Here `model` is the frozen resampler, `aligner = LockedImageAligner(model)` adds the heads, and the optimizer
is `AdamW(model.parameters(), ...)`.

What went wrong and why: an optimizer only steps the tensors it was given. `model.parameters()` are the
resampler's, all with `requires_grad=False`, so they never get a gradient and AdamW silently skips them
(no error is raised). `image_head`, `text_head` and `logit_scale` do receive gradients from
`loss.backward()` every step, but they are in no param group, so `optimizer.step()` never applies them: the
heads keep their random init, nothing in the model changes, and the loss fluctuates around its starting
value (above ln(B), since a random projection scaled by 1/0.07 is confidently wrong).

The fix: build the optimizer from the wrapper's trainable parameters,
`AdamW([p for p in aligner.parameters() if p.requires_grad], ...)`.

Validation (validate.py, 100 steps, B = 64, chance ln(B) = 4.159; final loss / ln(B)):
    seed 0: fault 1.803, fixed 0.075
    seed 1: fault 1.249, fixed 0.056
    seed 2: fault 1.298, fixed 0.046

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from flamingo_pytorch import PerceiverResampler
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("ImKeTT/PCAE#5",)
CAUSE = "param_not_in_optimizer"
FAMILY = "frozen parts"

B = 64


class LockedImageAligner(nn.Module):
    """A locked (frozen) image resampler with new trainable heads on both sides (LiT-style tuning)."""

    def __init__(self, resampler: nn.Module):
        super().__init__()
        self.resampler = resampler
        self.image_head = nn.Linear(D, E)
        self.text_head = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        img = F.normalize(self.image_head(lat.mean(1)), dim=-1)
        txt = F.normalize(self.text_head(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(n=4096, seed=seed)
    model = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
    model.requires_grad_(False)
    aligner = LockedImageAligner(model)
    if fixed:
        params = [p for p in aligner.parameters() if p.requires_grad]
    else:
        params = model.parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    session = watch(aligner, optimizer, batch_size=B)
    g = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = aligner(tokens[idx], texts[idx])
        logits = aligner.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B)
        optimizer.step()
    session.close()
