"""An image projection MLP initialised to all zeros (weights and biases).

What the user did: a perceiver-pytorch Perceiver over the patch tokens, mean over latents, then a
two-layer MLP projection head (Linear -> ReLU -> Linear) into the shared space; text is a small MLP.
Their `_init_weights` sets every Linear of the projection head to zero (`nn.init.zeros_` on weight
and bias), meaning to start the head "neutral".

Why it fails: with zero weights the head's hidden pre-activations are 0 for every input, ReLU gives 0
and its derivative at 0 is 0; the second layer's weight gradient is hidden^T @ grad = 0 and the
gradient sent back to the first layer goes through the zero second-layer weights = 0. Every image
maps to the same vector (the last bias), whose gradient is the sum over the batch of (txt_i -
mean txt) = 0. All hidden units are identical copies and stay so: nothing below the head (the
Perceiver) ever gets a gradient, the image embeddings are one vector for the whole batch, and the
loss stays at ln(B).

Thread: dnkirill/stn_idsia_convnet#4 ("features and weight are all zero, there will be no gradient
for both features and weight, both of them will stay to be zero"; a second user hit the same).
Fix: keep PyTorch's default (random) init for the head.

Validation (validate.py --half test21, seeds 0/1/2, 100 steps, B=32, ln B = 3.4657): fault final /
ln(B) = 1.0013 / 1.0025 / 1.0007; fixed = 0.0360 / 0.0417 / 0.0341.

Ground truth: symmetric_latents.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("dnkirill/stn_idsia_convnet#4",)
CAUSE = "symmetric_latents"
FAMILY = "initialisation"


class Aligner(nn.Module):
    def __init__(self, zero_head: bool):
        super().__init__()
        from perceiver_pytorch import Perceiver

        self.perceiver = Perceiver(num_freq_bands=4, depth=2, max_freq=8.0, input_channels=D, input_axis=1,
                                   num_latents=8, latent_dim=D, cross_heads=1, latent_heads=2, cross_dim_head=8,
                                   latent_dim_head=8, final_classifier_head=False, fourier_encode_data=False)
        self.head = nn.Sequential(nn.Linear(D, 2 * E), nn.ReLU(), nn.Linear(2 * E, E))
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if zero_head:
            self.head.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, tokens, texts):
        lat = self.perceiver(tokens, return_embeddings=True)
        return F.normalize(self.head(lat.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = Aligner(zero_head=not fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, optimizer, batch_size=B) as session:
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
