"""A CLS-token transformer pooler over frozen patch tokens, built with nn.TransformerEncoderLayer's
default batch_first=False and fed (batch, tokens, dim) tensors.

What the user did: the image side prepends a learned CLS token to the (B, T, D) patch tokens, runs
two nn.TransformerEncoderLayer blocks (ViT / CLIP style) and takes out[:, 0] as the image embedding;
text is a linear projection; symmetric InfoNCE with a learnable logit scale. The encoder layers are
built with the default batch_first=False, so PyTorch reads the (B, T+1, D) input as (seq=B,
batch=T+1, D): self-attention runs over the *batch* axis, mixing different images, while the tokens
of one image are treated as independent sequences.

Why it fails: position 0 of every sample holds the same CLS vector, and under the swapped layout the
"sequence" attended at position 0 is exactly those B identical CLS copies. Attention over identical
queries/keys/values returns the same vector for every row, so out[:, 0] is one constant vector for
the whole batch, in every layer: all image embeddings are identical, every row of the logit matrix
is flat, and the loss sits at ln(B) however long it trains.

Thread: DaoyuanLi2816/Molecule-Generator#22 (TransformerEncoderLayer / TransformerDecoderLayer
created with the default batch_first=False but fed (batch, seq, embed) tensors: "self-attention
mixed information across different molecules in the batch"). Fix there and here: batch_first=True.

Validation (validate.py --half test21, seeds 0/1/2, 100 steps, B=32, ln B = 3.4657): fault final /
ln(B) = 1.0006 / 1.0005 / 1.0004; fixed = 0.0316 / 0.0334 / 0.0332.

Ground truth: pooling_axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("DaoyuanLi2816/Molecule-Generator#22",)
CAUSE = "pooling_axis"
FAMILY = "architecture"


class ClsPoolAligner(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model=D, nhead=2, dim_feedforward=2 * D, dropout=0.0,
                                           batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)  # (B, T+1, D)
        x = self.encoder(x)
        img = self.proj(x[:, 0])  # the CLS output
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = ClsPoolAligner(batch_first=fixed)  # the user's code: nn.TransformerEncoderLayer(...) defaults
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
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
