"""The optimizer is built from the model's parameters before the trainable adapter is added to the model.

What the user did: adapter-style alignment on top of "pretrained" encoders (here a per-token vision block and a text
block, random stand-ins). Following the adapter-transformers recipe in their own loop, they (1) built the model,
(2) built the optimizer from `model.parameters()`, (3) called `model.add_adapter("align")`, which creates the
trainable part (a flamingo-pytorch PerceiverResampler over the patch tokens plus image and text projections), and
(4) called `model.train_adapter("align")`, which freezes everything but that adapter.

What went wrong and why: an optimizer holds the tensors it was given when it was built. At step (2) the adapter did
not exist yet, so its parameters are in no param group; the param groups hold only the base encoders, which step (4)
then freezes. Backward does compute gradients for the adapter (it requires grad), but `optimizer.step()` never
touches it, and the frozen base gets no gradients at all. Nothing changes: the random adapter keeps producing random
embeddings and the loss stays where it started, at or above ln(B). This is adapter-hub/adapters#260 ("Train T5 with adapter without using
Trainer class didn't update the adapter's weight": the loss stayed high and the first adapter's weights were
unchanged); the maintainer's diagnosis was "the optimizer is missing the adapter parameters. Try, to first add the
adapter to the model ... and then get the parameters for the optimizer", which solved it.

Fix (fixed=True): add the adapter and activate its training before building the optimizer, from the parameters that
require grad.

Validation (validate.py, seeds 0/1/2, B=32, 100 steps, final loss / ln(32)):
  fault: 1.7452 / 1.4379 / 1.4360   (final loss 6.0483 / 4.9833 / 4.9769: random embeddings at scale 1/0.07,
                                     frozen; ln(32) = 3.4657)
  fixed: 0.1278 / 0.1364 / 0.1030   (final loss 0.4428 / 0.4727 / 0.3569)

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("adapter-hub/adapters#260",)
CAUSE = "param_not_in_optimizer"
FAMILY = "frozen parts"

B = 32


class AlignModel(nn.Module):
    """'Pretrained' encoders (frozen once an adapter trains) and named alignment adapters added on demand."""

    def __init__(self):
        super().__init__()
        self.vision = nn.Sequential(nn.Linear(D, D), nn.GELU())       # last block of the vision backbone, per token
        self.text_encoder = nn.Sequential(nn.Linear(DT, DT), nn.GELU())
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.adapters = nn.ModuleDict()
        self.active = None

    def add_adapter(self, name: str) -> None:
        from flamingo_pytorch import PerceiverResampler

        self.adapters[name] = nn.ModuleDict({
            "resampler": PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8),
            "img_proj": nn.Linear(D, E),
            "txt_proj": nn.Linear(DT, E),
        })
        self.active = name

    def train_adapter(self, name: str) -> None:
        """Freeze the base model, train only this adapter (adapter-transformers' `train_adapter`)."""
        for n, p in self.named_parameters():
            p.requires_grad = n.startswith(f"adapters.{name}.")
        self.active = name

    def forward(self, tokens, texts):
        a = self.adapters[self.active]
        lat = a["resampler"](self.vision(tokens).unsqueeze(1))[:, 0]   # (B, T, D) -> (B, latents, D)
        img = a["img_proj"](lat.mean(1))
        txt = a["txt_proj"](self.text_encoder(texts))
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = AlignModel()
    if fixed:
        model.add_adapter("align")
        model.train_adapter("align")
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                                      weight_decay=0.01)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        model.add_adapter("align")
        model.train_adapter("align")

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        tok, txt_in = tokens[idx], texts[idx]
        img, txt = model(tok, txt_in)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)

        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tok)
        optimizer.step()
    session.close()
