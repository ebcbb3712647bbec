"""Single-channel input to a Perceiver without Fourier features: the cross-attention LayerNorm erases it.

What the user did: grayscale images (one intensity value per pixel) aligned with caption features. The image
tower is perceiver-pytorch's `Perceiver` with `input_channels=1, input_axis=2` and the Fourier position
encoding switched off (`fourier_encode_data=False`), latents mean-pooled and projected; the caption tower is a
small MLP; symmetric CLIP loss with a learnable logit scale, AdamW.

What went wrong and why: the Perceiver's cross-attention is pre-normed; its context goes through
`nn.LayerNorm(input_dim)` before the key/value projection. With one channel per input element, the LayerNorm
normalises a single number: x - mean(x) is exactly 0, so every pixel of every image becomes the same vector
(the LayerNorm bias). Keys and values are then identical for all pixels and all images, the latents never see
the image, and every image in the batch gets the same embedding. Nothing upstream of the LayerNorm is
trainable, so no step can bring the information back: the loss sits at ln(B) while the caption tower and the
logit scale train against a constant image embedding.

Thread: krasserm/perceiver-io#14 ("Genomic sequences": the model gives the SAME output for DIFFERENT inputs when
the number of channels is 1, the user not using Fourier feature encodings; the maintainer: the reason is the
single input channel, before multi-head attention the input runs through a layer norm whose output is ~0 when
there is one channel).

The fix: give the cross-attention context more than one channel; here by keeping perceiver-pytorch's Fourier
position channels (`fourier_encode_data=True`, the default the user had turned off), so the LayerNorm
normalises the pixel value together with its position features instead of alone.

Validation (benchmarks/real_faults/validate.py --half test24, seeds 0 1 2, final loss / ln(B), B = 32):
fault 1.0001 / 1.0001 / 1.0004 (image embeddings identical across the batch: pairwise cosine 1.0 from step 0),
fixed 0.3850 / 0.4219 / 0.3213.

Ground truth: embedding_collapse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, E, clip_loss

THREADS = ("krasserm/perceiver-io#14",)
CAUSE = "embedding_collapse"
FAMILY = "normalisation and temperature"

B = 32
SIDE = 16


def gray_caption_pairs(n: int = 2048, seed: int = 0):
    """Grayscale images (n, SIDE, SIDE, 1) and caption features (n, DT), both functions of 8 latent concepts."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=g)
    img = (z @ torch.randn(8, SIDE * SIDE, generator=g)).view(n, SIDE, SIDE, 1) / math.sqrt(8)
    img = img + 0.3 * torch.randn(n, SIDE, SIDE, 1, generator=g)
    txt = z @ torch.randn(8, DT, generator=g) + 0.1 * torch.randn(n, DT, generator=g)
    return img, txt


class GrayAligner(nn.Module):
    def __init__(self, fourier: bool):
        super().__init__()
        from perceiver_pytorch import Perceiver

        self.perceiver = Perceiver(num_freq_bands=6, depth=2, max_freq=16.0, input_channels=1, input_axis=2,
                                   num_latents=8, latent_dim=32, cross_heads=1, latent_heads=2, cross_dim_head=16,
                                   latent_dim_head=16, final_classifier_head=False, fourier_encode_data=fourier)
        self.proj = nn.Linear(32, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images, texts):
        lat = self.perceiver(images, return_embeddings=True)  # (B, H, W, 1) -> (B, latents, 32)
        return F.normalize(self.proj(lat.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    images, texts = gray_caption_pairs(2048, seed)
    model = GrayAligner(fourier=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(images), (B,), generator=g)
        img, txt = model(images[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        inputs=images[idx].flatten(1))
        optimizer.step()
    session.close()
