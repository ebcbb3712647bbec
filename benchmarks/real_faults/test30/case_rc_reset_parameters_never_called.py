"""A custom cosine projection head whose `reset_parameters()` is never called: zero weights, NaN after step 0.

What the user did: built the image side of a vision->text aligner as a Perceiver resampler (flamingo-pytorch)
followed by their own angular projection head, modelled on lsoftmax-pytorch's `LSoftmaxLinear`: the weight is
allocated in `__init__`, a `reset_parameters()` method would fill it with Kaiming-normal values, and
`forward` divides by the column norms of the weight to get cosines (norms written out by hand),

    cos = x @ w / (sqrt(sum(x**2, dim=1)) * sqrt(sum(w**2, dim=0)) + 1e-10)

`reset_parameters()` is never called from `__init__` (nor by the training script). In the thread the weight
was `torch.FloatTensor(...)`, i.e. uninitialised memory, which was "just zeros" for the reporter; the case
allocates it with `torch.zeros` so that every run is the same.

What went wrong and why: with an all-zero weight the head outputs zeros (the +1e-10 keeps the first forward
finite), every image embedding is the zero vector and the first loss is exactly ln(B). In the backward pass
the norm of a zero column has an infinite derivative (d sqrt(s)/ds at s = 0) multiplied by a zero upstream
gradient: 0 * inf = NaN. The head's weight gradient is NaN, AdamW writes NaN into the weight, and from the
second step on every image embedding, logit and loss is NaN. Nothing recovers from there. (Current
`torch.norm` returns a zero gradient at a zero vector; the hand-written norm used here does not, and gives
the thread's NaN.)

Thread: amirhfarzaneh/lsoftmax-pytorch#7 ("Forgot to call reset_parameters() in __init__": "because of
this weight of the linear layer -- it's just zeros and the loss goes to nan"; "I got the same problem, the
loss is always nan"; the answer: call `reset_parameters()`).

Fix (fixed=True): call `self.reset_parameters()` at the end of `__init__`.

Validation (validate.py, B=32, ln B = 3.4657, 100 steps, final = mean of the last 5 logged losses):
  fault: seeds 0, 1, 2: non-finite (first loss 3.4657, NaN from step 1 on)
  fixed: seed 0 0.0984 (0.0284), seed 1 0.1053 (0.0304), seed 2 0.1357 (0.0392)

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("amirhfarzaneh/lsoftmax-pytorch#7",)
CAUSE = "nonfinite_divergence"
FAMILY = "initialisation"

B, LR = 32, 1e-3


class CosineProjection(nn.Module):
    """Angular projection head: each output is the cosine between the input and a learned direction."""

    def __init__(self, in_features: int, out_features: int, fixed: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(in_features, out_features))  # filled by reset_parameters()
        if fixed:
            self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_normal_(self.weight.data.t())

    def forward(self, x):
        w_norm = self.weight.pow(2).sum(dim=0).sqrt()  # column norms ||w_j||
        x_norm = x.pow(2).sum(dim=1, keepdim=True).sqrt()
        return x.mm(self.weight) / (x_norm * w_norm + 1e-10)


class Aligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=1, dim_head=8, heads=2, num_latents=8)
        self.head = CosineProjection(D, E, fixed)
        self.text = nn.Sequential(nn.Linear(DT, 2 * E), nn.GELU(), nn.Linear(2 * E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]  # (B, T, D) -> (B, latents, D)
        img = F.normalize(self.head(lat.mean(1)), dim=-1)
        return img, F.normalize(self.text(texts), dim=-1)


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
