"""L2-normalised embeddings fed straight into the cross-entropy: cosine logits with no scale (temperature 1).

What the user did: trained an attention-pooling projector on frozen patch tokens against a text head. Both
embeddings go through an L2-normalisation layer and the cosine-similarity matrix is handed to the symmetric
cross-entropy as it is, `logits = img @ txt.t()`; there is no logit scale / temperature ("the cosine is
already a similarity, the softmax will sort it out").

What went wrong and why: unit vectors bound every logit to [-1, 1]. With B = 64 candidates the softmax can
give the matching caption at most e^1 / (e^1 + 63 e^(-1/63)) = 4% of its mass even for a perfect embedding,
so the loss cannot go below ln(1 + 63 e^(-1.016)) = 3.17 = 0.76 ln(B), however well the towers align:
the run drives the pairs together and then sits on that floor at ~0.79 ln(B), with every row's softmax
spread almost evenly over the batch. The temperature (here: its absence, t = 1) keeps the softmax from ever
being confident.

Thread: zhanghang1989/PyTorch-Encoding#43 ("training loss just not decrease (so so slow) when L2 norm
layer is used" before the softmax classifier; the maintainer: it depends on the scale of the problem, fine
for 10 classes, not for large ones), with the scale factor that L2-normalised features need explained in
weiliu89/caffe#115 (SSD re-scales its L2-normalised features by a learnable factor initialised at 20, "some
empirical value that seems to work well").

Fix (fixed=True): multiply the cosines by a learnable logit scale initialised at 1/0.07 (CLIP), i.e.
divide by a temperature of 0.07.

Validation (validate.py, B=64, ln B = 4.1589, 100 steps, final = mean of the last 5 logged losses):
  fault: seed 0 3.2777 (0.7881), seed 1 3.2805 (0.7888), seed 2 3.2814 (0.7890)
  fixed: seed 0 0.1388 (0.0334), seed 1 0.1439 (0.0346), seed 2 0.1291 (0.0310)

Ground truth: temperature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("zhanghang1989/PyTorch-Encoding#43", "weiliu89/caffe#115")
CAUSE = "temperature"
FAMILY = "normalisation and temperature"

B, LR = 64, 1e-3


class AttentionPool(nn.Module):
    """One learned query attending the frozen patch tokens (batch-first)."""

    def __init__(self):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.norm = nn.LayerNorm(D)

    def forward(self, tokens):
        x = self.norm(tokens)
        pooled, _ = self.attn(self.query.expand(len(x), -1, -1), x, x)
        return pooled[:, 0]


class Aligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.pool = AttentionPool()
        self.image_proj = nn.Linear(D, E)
        self.text_proj = nn.Sequential(nn.Linear(DT, 2 * E), nn.GELU(), nn.Linear(2 * E, E))
        if fixed:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = F.normalize(self.image_proj(self.pool(tokens)), dim=-1)
        txt = F.normalize(self.text_proj(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed)
    model = Aligner(fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed + 1)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = img @ txt.t()  # the user's line: cosine similarities used as logits as they are
        if fixed:
            logits = model.logit_scale.exp() * logits
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
