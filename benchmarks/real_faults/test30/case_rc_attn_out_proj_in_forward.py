"""A resampler whose attention output projection is built inside `forward`: a new random layer every step.

What the user did: wrote their own Perceiver-style resampler for a frozen vision backbone (learned latent
queries cross-attend the patch tokens, mean over latents, projection to the shared space, CLIP loss against
a trainable text head). The multi-head attention was adapted from the graykode/nlp-tutorial Transformer,
whose `MultiHeadAttention.forward` ends with

    output = nn.Linear(n_heads * d_v, d_model)(context)
    return nn.LayerNorm(d_model)(output + residual), attn

What went wrong and why: `nn.Linear(...)` inside `forward` creates a freshly initialised layer on every call.
Its weight and bias are leaf tensors that do receive gradients, but they belong to no registered module and
to no optimizer param group, so they are never updated; the next step throws them away and draws new ones.
Everything the image tokens contribute reaches the latents only through this projection (the residual is
the latent queries themselves), so the image embedding is a different random projection of the attended
tokens at every step. The projection head, the text head and the attention's q/k/v weights chase a target
that is re-randomised each step: the CLIP loss never gets below chance (it stays at or above ln(B): random
pairs scored with the initial logit scale of 1/0.07).

Threads: graykode/nlp-tutorial#29 ("If create the Linear() casually, it won't be trained during training",
pointing at exactly that line; acknowledged by the maintainer) and gupta-abhay/setr-pytorch#4 (layers
initialised inside `decode()`, called from `forward`, "will be initialized every time the model is fed
data. Therefore, these layers' weight are not trained at all"; fixed by moving them to `__init__`).

Fix (fixed=True): create the output projection (and the LayerNorm) once in `__init__`, so they are
registered, handed to the optimizer and trained.

Validation (validate.py, B=32, ln B = 3.4657, 100 steps, final = mean of the last 5 logged losses):
  fault: seed 0 4.1751 (1.2047), seed 1 4.0859 (1.1789), seed 2 3.9787 (1.1480)
  fixed: seed 0 0.1180 (0.0340), seed 1 0.0747 (0.0215), seed 2 0.1086 (0.0313)

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("graykode/nlp-tutorial#29", "gupta-abhay/setr-pytorch#4")
CAUSE = "param_not_in_optimizer"
FAMILY = "architecture"

B, LR, HEADS, D_K, LATENTS = 32, 1e-3, 2, 16, 8


class MultiHeadCrossAttention(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.fixed = fixed
        self.W_Q = nn.Linear(D, D_K * HEADS)
        self.W_K = nn.Linear(D, D_K * HEADS)
        self.W_V = nn.Linear(D, D_K * HEADS)
        if fixed:  # the fix: built once, registered, trained
            self.out = nn.Linear(HEADS * D_K, D)
            self.norm = nn.LayerNorm(D)

    def forward(self, Q, K, V):
        residual, b = Q, Q.size(0)
        q = self.W_Q(Q).view(b, -1, HEADS, D_K).transpose(1, 2)
        k = self.W_K(K).view(b, -1, HEADS, D_K).transpose(1, 2)
        v = self.W_V(V).view(b, -1, HEADS, D_K).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D_K), dim=-1)
        context = (attn @ v).transpose(1, 2).contiguous().view(b, -1, HEADS * D_K)
        if self.fixed:
            return self.norm(self.out(context) + residual)
        output = nn.Linear(HEADS * D_K, D)(context)  # the user's line: a new layer on every call
        return nn.LayerNorm(D)(output + residual)


class Resampler(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(LATENTS, D) * 0.02)
        self.attn = MultiHeadCrossAttention(fixed)
        self.ff = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))

    def forward(self, tokens):
        lat = self.latents.unsqueeze(0).expand(len(tokens), -1, -1)
        lat = self.attn(lat, tokens, tokens)
        return lat + self.ff(lat)


class Aligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.resampler = Resampler(fixed)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = self.proj(self.resampler(tokens).mean(1))
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = Aligner(fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
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
