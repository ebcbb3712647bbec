"""A ViT-style image tower built from the PyTorch transformer tutorial's pieces, fed batch-first tokens.

What the user did: the image side of a vision->text alignment model is a small ViT head over frozen
patch tokens: a linear patch embedding, a learnable CLS token, the tutorial's sinusoidal
`PositionalEncoding` (`x + pe[:x.size(0)]`) and `nn.TransformerEncoder` built with the default
`nn.TransformerEncoderLayer(d_model, nhead)`. The image embedding is the CLS output `x[:, 0]`, projected
and L2-normalised; the text side is a small MLP; CLIP's symmetric InfoNCE with a learnable logit scale.
The loader yields `(batch, tokens, dim)` tensors and the user passes them straight in.

What went wrong and why: `nn.TransformerEncoderLayer` defaults to `batch_first=False` and the tutorial's
positional encoding indexes the first axis, so both read a `(B, 1+T, W)` tensor as `(seq, batch, dim)`.
The positional code is added per *sample* (sample b gets `pe[b]` on all of its tokens) and self-attention
runs over the batch axis: for each token position, the B samples attend to one another, and the token
positions of one image never see each other. The CLS column holds the same learnable CLS vector for every
sample, plus `pe[b]`; it only ever attends to the other samples' CLS entries, so `x[:, 0]` for sample b
is a function of its position b in the batch and of nothing in its image. Every image embedding is the
same 32 vectors whatever the batch holds, the captions cannot be told apart from them, and the loss sits
at ln(B) with no error raised anywhere (the shapes are all valid).

Threads: zcao0420/MOFormer#9 (a user finds that the fine-tuning code feeds `[batch_size, seq_len]` into a
transformer whose `forward` and positional encoder expect `[seq_len, batch_size]`: `x + self.pe[:x.size(0)]`
then adds the encoding along the batch and the encoder attends across it), pytorch/tutorials#1547 (the same
tutorial `PositionalEncoding` read on `(batch, seq, ...)` data; the maintainers answer that the tutorial's
input is `(sequence length, batch)`, i.e. the caller must supply that layout).

Fix (fixed=True): hand the encoder the layout it expects: transpose to `(1+T, B, W)` before the positional
encoding and the encoder and back afterwards (equivalently `batch_first=True` with a batch-first positional
encoding); the CLS token then attends over its own image's patches.

Validation (benchmarks/real_faults/validate.py --half test25, B=32, 100 steps, final = mean of last 5
logged losses, ln(32) = 3.4657):
  seed 0: fault 3.4687 (ratio 1.0008), fixed 0.1191 (ratio 0.0344)
  seed 1: fault 3.4721 (ratio 1.0018), fixed 0.1214 (ratio 0.0350)
  seed 2: fault 3.4828 (ratio 1.0049), fixed 0.1289 (ratio 0.0372)

Ground truth: pooling_axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("zcao0420/MOFormer#9", "pytorch/tutorials#1547")
CAUSE = "pooling_axis"
FAMILY = "architecture"

B = 32
WIDTH = 32


class PositionalEncoding(nn.Module):
    """The PyTorch transformer tutorial's sinusoidal encoding: input `[seq_len, batch_size, embedding_dim]`."""

    def __init__(self, d_model: int, max_len: int = 512):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, 1, d_model)
        pe[:, 0, 0::2] = torch.sin(position * div_term)
        pe[:, 0, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x):
        return x + self.pe[: x.size(0)]


class PatchViT(nn.Module):
    """Patch tokens -> linear embedding + CLS + positional encoding -> TransformerEncoder -> CLS -> projection."""

    def __init__(self, seq_first: bool):
        super().__init__()
        self.seq_first = seq_first
        self.embed = nn.Linear(D, WIDTH)
        self.cls_token = nn.Parameter(torch.randn(1, 1, WIDTH) * 0.02)
        self.pos_encoder = PositionalEncoding(WIDTH)
        layer = nn.TransformerEncoderLayer(WIDTH, nhead=2, dim_feedforward=2 * WIDTH, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.proj = nn.Linear(WIDTH, E)

    def forward(self, tokens):
        x = self.embed(tokens)                                          # (B, T, W)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1)    # (B, 1+T, W)
        if self.seq_first:
            x = x.transpose(0, 1)                                       # (1+T, B, W): what the encoder reads
        x = self.encoder(self.pos_encoder(x))
        if self.seq_first:
            x = x.transpose(0, 1)
        return self.proj(x[:, 0])                                       # CLS token


class Aligner(nn.Module):
    def __init__(self, seq_first: bool):
        super().__init__()
        self.visual = PatchViT(seq_first)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.visual(tokens), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner(seq_first=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=len(img), inputs=tokens[idx])
        optimizer.step()
        optimizer.zero_grad()
    session.close()
