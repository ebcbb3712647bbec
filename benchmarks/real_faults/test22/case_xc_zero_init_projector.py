"""A new vision->text projector MLP zero-initialised in every parameter ("zero" embedder init): its weight
matrices get exactly zero gradient, only the output bias moves, and every image maps to the same embedding.

What the user did: frozen-backbone patch tokens go through a flamingo-pytorch PerceiverResampler (mean
over latents) and a newly added two-layer projector MLP (Linear, GELU, Linear) into the shared space; the
text side is a linear projection; CLIP loss with a learnable logit scale. Wanting the new branch to start
silent, the user's init helper zeroes the whole projector, `for p in projector.parameters():
p.data.zero_()`, the "zero" option of the thread.

What went wrong and why: with every parameter zero the hidden activations are GELU(0) = 0 for all inputs
and the output is 0. The output layer's weight gradient is g h^T = 0 (h = 0), the hidden layer's gradient
passes through the zero output weight and is 0, so both weight matrices stay exactly zero forever: only the
output bias receives a gradient. The image embedding is therefore the bias, the same vector for every
image; the resampler behind the projector receives no gradient either. The logits carry no pair
information and the loss sits at ln(B).

Threads: NVlabs/FastGen#42 (`embedder_init == "zero"` zeroes every parameter of a multi-layer embedder:
"several weight tensors receive zero gradients because of the zero symmetry (only some bias parameters may
update)", the pathway "remains effectively inactive"; suggested fix: the existing "random" branch, which
randomly initialises the hidden layers and zero-initialises only the output layer).

Fix (fixed=True): the thread's "random" branch: the projector keeps PyTorch's default (random) init and
only its output layer is zeroed.

Validation (validate.py --half test22, B=32, 100 steps, final loss / ln B):
  fault: seed 0 1.0003, seed 1 1.0007, seed 2 1.0005 (after 20 steps only the projector's output bias,
         the text projection and the logit scale have moved; all image embeddings identical)
  fixed: seed 0 0.0261, seed 1 0.0327, seed 2 0.0363

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("NVlabs/FastGen#42",)
CAUSE = "no_gradient_path"
FAMILY = "initialisation"

B = 32
LR = 1e-3


def init_projector(projector: nn.Sequential, mode: str) -> None:
    if mode == "zero":
        for p in projector.parameters():
            p.data.zero_()
    elif mode == "random":  # default init for the hidden layer, output layer zeroed
        nn.init.zeros_(projector[-1].weight)
        nn.init.zeros_(projector[-1].bias)


class ProjectorAligner(nn.Module):
    def __init__(self, projector_init: str):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.projector = nn.Sequential(nn.Linear(D, 2 * E), nn.GELU(), nn.Linear(2 * E, E))
        init_projector(self.projector, projector_init)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        pooled = self.resampler(tokens.unsqueeze(1))[:, 0].mean(1)
        img = F.normalize(self.projector(pooled), dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ProjectorAligner("random" if fixed else "zero")
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    try:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=gen)
            tok, txt_in = tokens[idx], texts[idx]
            img, txt = model(tok, txt_in)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tok)
            optimizer.step()
            optimizer.zero_grad()
    finally:
        session.close()
