"""Attention-pooling parameters allocated with `nn.Parameter(torch.Tensor(...))` and never initialised: the run
is NaN from its first step.

What the user did: an image->text aligner whose image head is a hand-written multi-head attention pooling
over frozen-backbone patch tokens, written the way the GAT layer of the thread writes its weights: the
projection and the per-head scoring vectors are created as `nn.Parameter(torch.Tensor(...))`, and the
layer has an `init_params()` (Xavier) that the user's `__init__` does not call (they took
`nn.Parameter(...)` for an initialiser, as `nn.Linear` is one). The text tower is a small MLP, the logits are
`exp(logit_scale) * img @ txt.T` on unit rows, the loss the symmetric InfoNCE. For reproducible runs the
user's seeding helper calls `torch.use_deterministic_algorithms(True)`.

What went wrong and why: `torch.Tensor(n, m)` only allocates memory (it is `torch.empty`); whatever bytes are
there become the weights. Left alone that is arbitrary garbage, huge values, denormals or NaN (the thread:
"it will sometimes include nan value and results in training failure"); under deterministic mode PyTorch
fills uninitialised memory with NaN on purpose (`torch.utils.deterministic.fill_uninitialized_memory`), so
here every such weight is NaN on every seed. The pooled image embedding, the logits and the loss are NaN
from step 0, the gradients are NaN and AdamW spreads NaN into every weight it touches.

Thread: gordicaleksa/pytorch-GAT#11 ("Whenever you use `nn.Parameter(torch.Tensor(...))`, it will sometimes
include nan value and results in training failure. In case someone skip the `nn.init.xavier_uniform_` ...";
it links discuss.pytorch.org/t/nn-parameter-contains-nan-when-initializing/44559).

Fix (fixed=True): the layer's `init_params()` is called in `__init__` (Xavier-uniform on every weight
allocated with `torch.Tensor`).

Validation (validate.py --half test23, seeds 0/1/2, 100 steps, B=64, ln(B)=4.159; final = mean of the last
5 steps): fault non-finite on every seed (loss NaN from step 0), fixed final loss 0.224 / 0.280 / 0.223,
ratio 0.054 / 0.067 / 0.054.

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from common import DT, D, E, T, clip_loss, token_pairs
from torch import nn

THREADS = ("gordicaleksa/pytorch-GAT#11",)
CAUSE = "nonfinite_divergence"
FAMILY = "initialisation"

B = 64


class AttentionPool(nn.Module):
    """Multi-head attention pooling of patch tokens, weights laid out like the GAT layer's."""

    def __init__(self, dim: int, out: int, heads: int = 4, init: bool = False):
        super().__init__()
        self.heads, self.head_dim = heads, out // heads
        self.pos = nn.Parameter(torch.Tensor(1, T, dim))
        self.linear_proj = nn.Parameter(torch.Tensor(dim, heads * self.head_dim))
        self.scoring_fn = nn.Parameter(torch.Tensor(1, heads, self.head_dim))
        self.out_proj = nn.Linear(heads * self.head_dim, out)
        if init:  # the fix: the call the user's __init__ left out
            self.init_params()

    def init_params(self):
        nn.init.xavier_uniform_(self.pos)
        nn.init.xavier_uniform_(self.linear_proj)
        nn.init.xavier_uniform_(self.scoring_fn)

    def forward(self, tokens):  # (B, T, D)
        h = ((tokens + self.pos) @ self.linear_proj).view(len(tokens), tokens.shape[1], self.heads, self.head_dim)
        scores = (h * self.scoring_fn.unsqueeze(1)).sum(-1)  # (B, T, heads)
        attn = F.leaky_relu(scores, 0.2).softmax(dim=1)  # over the tokens of each image
        pooled = (attn.unsqueeze(-1) * h).sum(1).flatten(1)  # (B, heads * head_dim)
        return self.out_proj(pooled)


class Aligner(nn.Module):
    def __init__(self, init: bool = False):
        super().__init__()
        self.image = AttentionPool(D, E, init=init)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.image(tokens), dim=-1), F.normalize(self.text(texts), dim=-1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    seed_everything(seed)
    try:
        tokens, texts = token_pairs(1024, seed=seed)
        model = Aligner(init=fixed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        g = torch.Generator().manual_seed(seed)
        session = watch(model, optimizer, batch_size=B)
        try:
            for step in range(steps):
                idx = torch.randint(0, len(tokens), (B,), generator=g)
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                optimizer.zero_grad()
                loss.backward()
                session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                                logits=logits, batch_size=B, inputs=tokens[idx].mean(1))
                optimizer.step()
        finally:
            session.close()
    finally:  # leave the process-wide flag as it was for whatever runs next in this process
        torch.use_deterministic_algorithms(was_deterministic)
