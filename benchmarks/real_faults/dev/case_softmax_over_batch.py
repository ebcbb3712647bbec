"""Attention pooling whose softmax runs over the batch axis: `nn.Softmax(dim=0)` on (B, latents) scores,
so each image's pooling weights depend on the other images in the batch and sum to one per latent, not
per image.

Threads: PetrochukM/PyTorch-NLP#2 ("Attention's softmax dimension is wrong?": `nn.Softmax(dim=0)` on a
tensor whose first axis is the batch), catalyst-team/catalyst#285 ("fixing softmax dim for attention
pooling"). Here: a flamingo-pytorch resampler whose latents are pooled by a learned scorer, softmax over dim 0.
Ground truth: pooling_axis.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("PetrochukM/PyTorch-NLP#2", "catalyst-team/catalyst#285")
CAUSE = "pooling_axis"
FAMILY = "architecture"
BATCH = 32


class AttnPoolAligner(ResamplerAligner):
    def __init__(self):
        super().__init__()
        self.score = nn.Linear(self.proj.in_features, 1)
        self.pool_softmax = nn.Softmax(dim=0)  # BUG: dim 0 is the batch; the latents are dim 1

    def encode_image(self, tokens):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]  # (B, latents, D)
        weights = self.pool_softmax(self.score(lat).squeeze(-1))  # (B, latents)
        return self.proj((weights.unsqueeze(-1) * lat).sum(1))


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(seed=seed)
    model = AttnPoolAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img = F.normalize(model.encode_image(tokens[idx]), dim=-1)
            txt = F.normalize(model.text(texts[idx]), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
