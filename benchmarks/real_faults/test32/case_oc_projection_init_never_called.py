"""The projection matrices are placeholders filled by an `init_parameters()` that is never called: both
towers project through all-zero weights, every embedding and logit is 0, and every gradient is exactly 0.

What the user did: a CLIP-style dual encoder written after open_clip's modules: the image tower is a
flamingo-pytorch PerceiverResampler over frozen patch tokens (mean over latents, LayerNorm), the text tower
an MLP over pooled caption features, and each ends in a bare projection matrix declared in `__init__` as a
placeholder (`nn.Parameter(torch.zeros(width, E))`) to be drawn in `init_parameters()`, as open_clip does
with `text_projection`. The model never calls `init_parameters()`; training runs with AdamW on all
parameters.

What went wrong and why: with both projections at zero the image and text embeddings are zero vectors
(`F.normalize` of a zero vector stays zero), so all logits are 0 and the loss is exactly ln B. The gradient
reaching each embedding is `scale * (P - I) @ other_side_embedding`, which is zero because the other side is
zero too; so both projection matrices, everything upstream of them and the logit scale get exactly zero
gradient. The run sits on this saddle forever: the loss is ln B to the last digit on every step, and weight
decay keeps the zeros at zero.

Threads: mlfoundations/open_clip#551 ("CoCa: fix MultimodalTransformer init"): the MultimodalTransformer's
`init_parameters` was never called ("No I think it used the default ones") and its `text_projection` is
created with `torch.empty`, so the PR makes the module actually initialise its weights. longjon/caffe#3
("Repeated loss of 3.04452"): the same loss, ln 21 (chance for the 21 classes), on every iteration and
every dataset; the maintainer's diagnosis: a constant loss means the weights are not initialised properly
and the network is outputting all zeros.

Fix (fixed=True): call `init_parameters()` at the end of `__init__` (normal, std = width ** -0.5, as
open_clip initialises its projections).

Validation (validate.py --half test32, 100 steps, B=64, final loss / ln B):
  fault: seed 0 1.0000, seed 1 1.0000, seed 2 1.0000 (4.1589 = ln 64 on every step)
  fixed: seed 0 0.0358, seed 1 0.0428, seed 2 0.0335

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("mlfoundations/open_clip#551", "longjon/caffe#3")
CAUSE = "no_gradient_path"
FAMILY = "initialisation"

TEXT_WIDTH = 64


class DualEncoder(nn.Module):
    def __init__(self, call_init: bool = False):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.ln_post = nn.LayerNorm(D)
        self.text = nn.Sequential(nn.Linear(DT, TEXT_WIDTH), nn.GELU(), nn.Linear(TEXT_WIDTH, TEXT_WIDTH),
                                  nn.LayerNorm(TEXT_WIDTH))
        # placeholders, drawn in init_parameters()
        self.image_projection = nn.Parameter(torch.zeros(D, E))
        self.text_projection = nn.Parameter(torch.zeros(TEXT_WIDTH, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if call_init:  # the fix: the initialiser is actually run
            self.init_parameters()

    def init_parameters(self):
        nn.init.normal_(self.image_projection, std=D ** -0.5)
        nn.init.normal_(self.text_projection, std=TEXT_WIDTH ** -0.5)

    def encode_image(self, tokens):
        pooled = self.ln_post(self.resampler(tokens.unsqueeze(1))[:, 0].mean(1))
        return pooled @ self.image_projection

    def encode_text(self, texts):
        return self.text(texts) @ self.text_projection

    def forward(self, tokens, texts):
        return F.normalize(self.encode_image(tokens), dim=-1), F.normalize(self.encode_text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    B = 64
    model = DualEncoder(call_init=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    try:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            x, t = tokens[idx], texts[idx]
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=x)
            optimizer.step()
            optimizer.zero_grad()
    finally:
        session.close()
