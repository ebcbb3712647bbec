"""A [CLS]-token transformer pooler fed batch-first tokens after a leftover `.transpose(0, 1)`: attention
runs over the batch axis, and the [CLS] slot only ever sees the other samples' (identical) [CLS] tokens.

What the user did: frozen-backbone patch tokens (B, T, D) get a learned [CLS] summary token prepended and
go through a small `nn.TransformerEncoder` built with `batch_first=True`; the image embedding is the
[CLS] output (position 0) after a projection, the text side is a linear projection of the pooled text
features, CLIP loss with a learnable logit scale. The encoder call was carried over from sequence-first
code: `self.encoder(x.transpose(0, 1)).transpose(0, 1)`, the exact pattern of the thread.

What went wrong and why: with `batch_first=True` the transposed tensor (T+1, B, D) is read as T+1
"samples" of a length-B sequence, so self-attention mixes the B images at each token position instead of
the tokens of one image. Position 0 holds the learned [CLS] vector, the same for every image, so the [CLS]
output is the same vector for the whole batch at every layer, whatever the images are (exactly so in
eval mode, up to dropout noise in training): all image embeddings are identical, the logits carry no pair
information and the CLIP loss sits at ln(B) from the first step to the last, while every parameter still
receives gradients and moves.

Threads: ant-research/StructuredLM_RTDT#2 (the BinaryEncoder's `nn.MultiheadAttention(batch_first=True)`
was called as `self.tree_encoder(input_embedding.transpose(0, 1)).transpose(0, 1)` with task/[MASK]
embeddings prepended and `outputs[:, 0]` read; the maintainer fixed it the same day, commit e25f422
"fix a bug in the legacy r2d2", by dropping both transposes).

Fix (fixed=True): call the batch-first encoder on the (B, T+1, D) tensor as it is, no transposes.

Validation (validate.py --half test22, B=32, 100 steps, final loss / ln B):
  fault: seed 0 1.0009, seed 1 1.0094, seed 2 1.0105 (loss 3.4688, 3.4984, 3.5023; ln 32 = 3.4657)
  fixed: seed 0 0.0318, seed 1 0.0382, seed 2 0.0330

Ground truth: pooling_axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("ant-research/StructuredLM_RTDT#2",)
CAUSE = "pooling_axis"
FAMILY = "architecture"

B = 32
LR = 1e-3


class ClsPoolAligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.fixed = fixed
        self.cls_token = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model=D, nhead=2, dim_feedforward=2 * D, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)  # (B, T+1, D)
        if self.fixed:
            h = self.encoder(x)
        else:
            h = self.encoder(x.transpose(0, 1)).transpose(0, 1)  # the bug: encoder is batch_first
        return self.proj(h[:, 0])  # [CLS] output

    def forward(self, tokens, texts):
        img = F.normalize(self.encode_image(tokens), dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ClsPoolAligner(fixed)
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
