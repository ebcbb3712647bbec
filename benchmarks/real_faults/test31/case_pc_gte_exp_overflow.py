"""GTE-style "improved contrastive loss" written with plain `torch.exp(sim / tau)` at tau = 0.01: the
exponentials overflow float32 and the loss is inf/NaN from the first step.

What the user did: image-text alignment (flamingo-pytorch PerceiverResampler over patch tokens, linear text
head, both L2-normalised) trained with the improved contrastive loss of the GTE paper, which adds the
image->image and text->text in-batch similarities to the partition function. Following the formula, the
user exponentiates each similarity matrix divided by the temperature (0.01, the GTE value), masks the self
similarities, sums the partition function and takes -log(positive / partition).

What went wrong and why: with tau = 0.01 the exponent is cos/tau in [-100, 100], and float32 overflows above
exp(88.7) = 3.4e38, i.e. for any cosine above 0.887. Different images of a batch start out almost parallel
after the randomly initialised resampler (max off-diagonal image cosine 0.98-1.0 at step 0, exact duplicates
included), so exp(s_ii / tau) is inf in the partition function at step 0; the positive term, a cosine near 0,
is finite, so -log(pos / inf) = inf, the backward pass yields NaN gradients and every parameter is NaN after
the first optimizer step. Nothing is wrong with the embeddings or the temperature value itself; the
objective is computed in a numerically unsafe way. In sentence-transformers#2774 the maintainer
reimplementing this loss hit the overflow and removed it by subtracting a constant from the exponent before
exp (s/tau - c, so that the largest term is exp(0) = 1); Context-Aware-Consistency subtracts the row maximum
"to avoid NaN ... some exp(x_j) may get the value of INF".

Threads: huggingface/sentence-transformers#2774 (improved contrastive loss at temperature 0.01 overflows,
fixed by shifting the exponent), JIA-Lab-research/Context-Aware-Consistency#14 (neg_max subtracted because
exp(x_j) reaches INF and gives NaN).

Fix: shift the exponent by each row's maximum and keep the positive term in log space, i.e. the same loss
computed as logsumexp(all similarities / tau) - s_pos / tau. (Subtracting the fixed c = 1/tau alone is not
enough from a random init: the positive, a cosine near 0, then underflows to exp(-100) = 0 and the log is
-inf.)

Validation (validate.py --half test31, seeds 0/1/2, 100 steps, B=32, ln(B)=3.4657): fault non-finite from
step 0 on every seed (first_nonfinite_step 0, final loss NaN); fixed final loss / ln(B) 0.0124 / 0.0341 / 0.0308
(final loss 0.043 / 0.118 / 0.107).

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, token_pairs

THREADS = ("huggingface/sentence-transformers#2774", "JIA-Lab-research/Context-Aware-Consistency#14")
CAUSE = "nonfinite_divergence"
FAMILY = "normalisation and temperature"

TAU = 0.01  # GTE's temperature


class ResamplerAligner(nn.Module):
    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)

    def forward(self, tokens, texts):
        img = self.proj(self.resampler(tokens.unsqueeze(1))[:, 0].mean(1))
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def improved_contrastive_loss(img, txt, tau=TAU):
    """GTE: -log exp(s(q_i,d_i)/t) / Z_i, Z_i = sum_j exp(s(q_i,d_j)/t) + sum_j exp(s(q_j,d_i)/t)
    + sum_{j!=i} exp(s(q_i,q_j)/t) + sum_{j!=i} exp(s(d_i,d_j)/t)."""
    B = img.shape[0]
    self_mask = torch.eye(B, dtype=torch.bool)
    exp_it = torch.exp(img @ txt.t() / tau)
    exp_ii = torch.exp(img @ img.t() / tau).masked_fill(self_mask, 0.0)
    exp_tt = torch.exp(txt @ txt.t() / tau).masked_fill(self_mask, 0.0)
    pos = exp_it.diag()
    partition = exp_it.sum(1) + exp_it.sum(0) - pos + exp_ii.sum(1) + exp_tt.sum(1)
    return -torch.log(pos / partition).mean()


def improved_contrastive_loss_stable(img, txt, tau=TAU):
    """The same objective with the exponent shifted by the row maximum (logsumexp)."""
    B = img.shape[0]
    self_mask = torch.eye(B, dtype=torch.bool)
    s_it = img @ txt.t() / tau
    s_ti = s_it.t().masked_fill(self_mask, float("-inf"))  # the positive is already counted in s_it
    s_ii = (img @ img.t() / tau).masked_fill(self_mask, float("-inf"))
    s_tt = (txt @ txt.t() / tau).masked_fill(self_mask, float("-inf"))
    all_terms = torch.cat([s_it, s_ti, s_ii, s_tt], dim=1)
    return (torch.logsumexp(all_terms, dim=1) - s_it.diag()).mean()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B, lr = 32, 1e-3
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_fn = improved_contrastive_loss_stable if fixed else improved_contrastive_loss
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        loss = loss_fn(img, txt)
        loss.backward()
        logits = img @ txt.t() / TAU  # the image->text part of the objective
        session.observe(step, losses={"contrastive": loss}, embeddings={"image": img, "text": txt},
                        logits=logits, batch_size=B, inputs=tokens[idx])
        optimizer.step()
        optimizer.zero_grad()
    session.close()
