"""A query-pooling head over frozen patch tokens turns the attention output from sequence-first to
batch-first with `.view()` instead of `.transpose()`, so every "image" row is built from other images.

What the user did: a DETR / Q-Former style attention pool for vision->text alignment. K learned queries
attend over the patch tokens through `nn.MultiheadAttention`, which the user left at its default
sequence-first layout (`batch_first=False`): the tokens go in as (T, B, D), the queries as (K, B, D), and the
output comes back as (K, B, D). To mean-pool over the queries per image the user reshapes it to
(B, K, D) with `out.view(B, -1, D)`, the line OpenPSG copied from DETR (`.view(...)` used to move the batch
axis to the front).

What went wrong and why: `view` does not move axes, it re-reads the same memory. The (K, B, D) buffer holds
query 0 of all B images, then query 1 of all B images, ...; read as (B, K, D), row b is
query b*K//B of the images (b*K) % B ... (b*K) % B + K - 1. With K=8 and B=32 each "image embedding" is the
mean of one query over 8 images (for most rows not including image b), and rows b, b+4, b+8, ... average
the same 8 images. Image row b is no longer a function of image b, so it cannot match caption b: the image tower mixes the samples of the batch
and the contrastive loss stays at ln(B) however long it trains. No error is raised because the element
count is the same. In OpenPSG the maintainers answered that the code was inherited from DETR, that they
train with batch size 1 per GPU (where the view happens to be correct) and that permute/transpose is the
right operation for a larger batch; Informer2020 had the same `.view()`-as-transpose mistake in its
attention and the authors acknowledged it as an error and fixed it.

Threads: Jingkang50/OpenPSG#56 (view used to turn (100, 3, ...) into (3, 100, ...), batch mixed for batch
size > 1), zhouhaoyi/Informer2020#59 (view used to change the order of dimensions, confirmed and fixed).

Fix: `out.transpose(0, 1)` (or `permute(1, 0, 2)`), so each row keeps its own image's queries.

Validation (validate.py --half test31, seeds 0/1/2, 100 steps, B=32, ln(B)=3.4657), final loss / ln(B):
fault 1.0242 / 1.0064 / 1.0407 (final loss 3.550 / 3.488 / 3.607), fixed 0.0439 / 0.0474 / 0.0448
(final loss 0.152 / 0.164 / 0.155).

Ground truth: pooling_axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("Jingkang50/OpenPSG#56", "zhouhaoyi/Informer2020#59")
CAUSE = "pooling_axis"
FAMILY = "architecture"


class QueryPoolAligner(nn.Module):
    """K learned queries cross-attend over the patch tokens (nn.MultiheadAttention, sequence-first), are
    averaged and projected; captions go through a small MLP; learnable log logit scale."""

    def __init__(self, fixed: bool, num_queries: int = 8):
        super().__init__()
        self.fixed = fixed
        self.query = nn.Parameter(torch.randn(num_queries, 1, D) * 0.02)
        self.attn = nn.MultiheadAttention(D, num_heads=2)  # default batch_first=False: (seq, batch, dim)
        self.norm = nn.LayerNorm(D)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, tokens: torch.Tensor) -> torch.Tensor:
        B = tokens.shape[0]
        memory = tokens.transpose(0, 1)                    # (T, B, D)
        queries = self.query.expand(-1, B, -1)            # (K, B, D)
        out, _ = self.attn(queries, memory, memory)       # (K, B, D)
        if self.fixed:
            out = out.transpose(0, 1)                     # (B, K, D)
        else:
            out = out.view(B, -1, D)                      # the bug: reinterprets memory, mixes images
        return self.proj(self.norm(out).mean(1))

    def forward(self, tokens, texts):
        return F.normalize(self.encode_image(tokens), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B, lr = 32, 1e-3
    tokens, texts = token_pairs(1024, seed)
    model = QueryPoolAligner(fixed=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
        optimizer.zero_grad()
    session.close()
