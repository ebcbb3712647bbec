"""SimCLR-style loss ported from `tf.math.l2_normalize(z)` (axis=None) as `z / z.norm()`: the batch matrix is
normalised as a whole, not each embedding, so the cosine logits are B times too small.

What the user did: a Perceiver (perceiver-pytorch) over frozen patch tokens, mean over the latents and a linear
projection for the image side, a small MLP for the caption features, and a contrastive loss ported from
TensorFlow Similarity's SimCLRLoss: `za = tf.math.l2_normalize(za)`, `zb = tf.math.l2_normalize(zb)`, then
`logits = za @ zb.T / temperature` (temperature 0.07) and a symmetric cross-entropy. In PyTorch they wrote the
normalisation as `z / z.norm()`, which is what `l2_normalize` does without an axis.

What went wrong and why: without an axis the L2 norm is taken over the whole (B, E) matrix, batch included. Each
row then has a norm of about 1/sqrt(B) instead of 1, every dot product is about B times smaller than the cosine
it stands for, and with B=32 and a temperature of 0.07 the logits span about +-0.45 instead of +-14: the softmax
over the batch stays close to uniform whatever the encoders learn, the loss cannot go much below ln(B) and its
gradients are tiny. In the thread the SimCLR example's training loss did not decrease for many epochs; the
investigation traced it to `l2_normalize` being called without `axis=-1` in SimCLRLoss, and with each embedding
normalised on its own "The train loss is now making clear progress decreasing".

Thread: tensorflow/similarity#233 (SimCLR training loss not decreasing; fixed by normalising with axis=-1).

Fix: normalise each embedding on its own, `F.normalize(z, dim=-1)` (`tf.math.l2_normalize(z, axis=-1)`).

Validation (validate.py --half test29, seeds 0 1 2, 100 steps, B=32, ln(B)=3.4657; final = mean of the last 5
steps): fault final loss (seeds 0 / 1 / 2) 3.0758 / 3.0844 / 3.0815 = 0.8875 / 0.8900 / 0.8891 of ln(B) (it creeps
down from 3.46: the logits start within about +-0.45); fixed 0.1282 / 0.1607 / 0.1341 = 0.0370 / 0.0464
/ 0.0387.

Ground truth: not_normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, token_pairs

THREADS = ("tensorflow/similarity#233",)
CAUSE = "not_normalised"
FAMILY = "normalisation and temperature"

B = 32
TEMPERATURE = 0.07


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        from perceiver_pytorch import Perceiver

        self.perceiver = Perceiver(num_freq_bands=4, depth=2, max_freq=8.0, input_channels=D, input_axis=1,
                                   num_latents=8, latent_dim=D, cross_heads=1, latent_heads=2, cross_dim_head=8,
                                   latent_dim_head=8, final_classifier_head=False, fourier_encode_data=False)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))

    def forward(self, tokens, texts):
        za = self.proj(self.perceiver(tokens, return_embeddings=True).mean(1))
        zb = self.text(texts)
        return za, zb


def l2_normalize(z: torch.Tensor, per_row: bool) -> torch.Tensor:
    if per_row:
        return F.normalize(z, dim=-1)  # tf.math.l2_normalize(z, axis=-1)
    return z / z.norm()  # tf.math.l2_normalize(z): no axis, the whole matrix


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Encoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.arange(B)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        za, zb = model(tokens[idx], texts[idx])
        za, zb = l2_normalize(za, per_row=fixed), l2_normalize(zb, per_row=fixed)
        logits = za @ zb.t() / TEMPERATURE
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"contrastive": loss}, embeddings={"image": za, "text": zb}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
