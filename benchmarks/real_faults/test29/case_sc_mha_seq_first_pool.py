"""Attention pooling over frozen patch tokens with `nn.MultiheadAttention` fed batch-first tensors while the
module is seq-first (`batch_first=False`, PyTorch's default): the attention runs over the batch axis.

What the user did: a small alignment head over frozen patch tokens (B, T, D), written like asteroid's DPTNet
"improved transformer" layer (asteroid-team/asteroid#380): a learned [CLS] token is prepended to the tokens, the
sequence goes through a pre-norm block of `nn.MultiheadAttention(dim, heads)` + feed-forward, the [CLS] position
`x[:, 0]` is projected into the shared space and scored CLIP-style against a text projection. The tensors are
(batch, seq, dim) everywhere, the attention module was built without `batch_first=True`.

What went wrong and why: `nn.MultiheadAttention` reads a 3-D input as (seq, batch, dim) unless `batch_first=True`.
With (B, T+1, D) it takes the B images as the sequence and the T+1 token positions as the batch: position t of
image i attends to position t of every other image in the batch. At the [CLS] position every image holds the
same learned token, so its query, keys and values are identical across the batch, the attention output is the
same for all B images, and after the residual and the feed-forward the pooled vector `x[:, 0]` does not depend
on the image at all. Every image gets the same embedding; the logits of each caption are equal across images and
the loss sits at ln(B) whatever the projections learn. In the thread the maintainers confirmed the layer fed
(batch, seq, ch) tensors to a seq-first `nn.MultiheadAttention` ("Definitely a bug, i did not catch it because
the net was training strangely") and fixed it.

Thread: asteroid-team/asteroid#380 (DPTNet's MultiheadAttention received [batch, seq_len, channels] while
PyTorch expects [seq_len, batch, channels] by default; confirmed as a bug and fixed).

Fix: build the attention with `batch_first=True` (or transpose to (seq, batch, dim) around it), so each image's
[CLS] token attends over that image's own patch tokens.

Validation (validate.py --half test29, seeds 0 1 2, 100 steps, B=32, ln(B)=3.4657; final = mean of the last 5
steps): fault final loss (seeds 0 / 1 / 2) 3.4680 / 3.4674 / 3.4674 = 1.0007 / 1.0005 / 1.0005 of ln(B) (every
image gets the same embedding); fixed 0.0677 / 0.1000 / 0.0977 = 0.0195 / 0.0288 / 0.0282.

Ground truth: pooling_axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("asteroid-team/asteroid#380",)
CAUSE = "pooling_axis"
FAMILY = "architecture"

B = 32


class ClsAttentionPool(nn.Module):
    """[CLS] token + one pre-norm attention/feed-forward block over the patch tokens, [CLS] output projected."""

    def __init__(self, dim: int, heads: int = 4, batch_first: bool = False):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.proj = nn.Linear(dim, E)

    def forward(self, tokens):  # tokens: (B, T, D)
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)  # (B, T+1, D)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.ff(self.norm2(x))
        return self.proj(x[:, 0])


class Aligner(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        self.pool = ClsAttentionPool(D, batch_first=batch_first)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(2.6593))  # ln(1/0.07), as open_clip

    def forward(self, tokens, texts):
        return F.normalize(self.pool(tokens), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner(batch_first=fixed)  # the user's module: batch_first left at its default (False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed + 1)
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
