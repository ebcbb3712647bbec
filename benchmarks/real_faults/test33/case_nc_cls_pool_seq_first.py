"""A ViT-style CLS-token pooler over frozen patch tokens, built from `nn.TransformerEncoderLayer` left at its
default `batch_first=False` while the tensors are batch-first: the CLS output is the same for every image.

What the user did: image side = frozen-backbone patch tokens (B, T, D) -> prepend a learned CLS token ->
2 pre-norm `nn.TransformerEncoderLayer`s -> LayerNorm -> projection of the CLS position; text side = a linear
projection of frozen text features; symmetric CLIP loss with a learnable logit scale (open_clip init), AdamW.
The encoder layer was created without `batch_first=True`, and the (B, 1+T, D) tensor was fed to it as is.

What went wrong and why: with `batch_first=False` PyTorch's attention reads the tensor as (seq, batch, dim), so
the "sequence" it attends over is the batch axis and every token position is a separate "sample". Position 0
holds the CLS token, which is the same learned vector for every image, so at position 0 the attention runs over
B identical copies of it: the CLS output never sees a single patch token, it is one vector shared by the whole
batch (its only per-image input, the patch tokens, sit at other positions and are mixed across images there).
Every image embedding is therefore identical, the logits of a row are constant, and the loss sits at exactly
ln(B) however long it trains, while the weights keep moving. MP-SENet had the same default: its conformer's
`nn.MultiheadAttention` was built without `batch_first=True` and received (b*f, t, c) tensors, so the attention ran
over the batch-and-frequency axis (#21); a user showed samples changing each other's outputs in a batch (#64) and
the author confirmed the attention should have been created with `batch_first=True` (#60).

Threads: yxlu-0102/MP-SENet#21 (batch_first left False on batch-first tensors: attention over the wrong axis),
yxlu-0102/MP-SENet#64 (samples in a batch leak into each other), yxlu-0102/MP-SENet#60 (the author: set
batch_first=True).

Fix: `nn.TransformerEncoderLayer(..., batch_first=True)` (the thread's fix), so attention runs over the 1+T tokens
of each image.

Validation (validate.py --half test33, B=64, ln(B)=4.1589, 100 steps, final = mean of the last 5 steps):
  fault: seed 0 4.1601 (ratio 1.0003), seed 1 4.1614 (1.0006), seed 2 4.1605 (1.0004)
  fixed: seed 0 0.1480 (0.0356), seed 1 0.1473 (0.0354), seed 2 0.1309 (0.0315)

Ground truth: pooling_axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, T, clip_loss, token_pairs

THREADS = ("yxlu-0102/MP-SENet#21", "yxlu-0102/MP-SENet#64", "yxlu-0102/MP-SENet#60")
CAUSE = "pooling_axis"
FAMILY = "architecture"


class ClsPooler(nn.Module):
    """Patch tokens -> [CLS] + tokens -> transformer encoder -> LayerNorm -> projection of the CLS position."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, T + 1, D) * 0.02)
        layer = nn.TransformerEncoderLayer(D, nhead=4, dim_feedforward=2 * D, dropout=0.0, norm_first=True,
                                           batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.norm = nn.LayerNorm(D)
        self.proj = nn.Linear(D, E)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos  # (B, 1+T, D)
        x = self.encoder(x)
        return self.proj(self.norm(x[:, 0]))  # the CLS token


class Aligner(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        self.image = ClsPooler(batch_first)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.image(tokens), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 64
    tokens, texts = token_pairs(2048, seed=seed)
    model = Aligner(batch_first=fixed)  # the bug: the default batch_first=False on (B, 1+T, D) tensors
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=gen)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
