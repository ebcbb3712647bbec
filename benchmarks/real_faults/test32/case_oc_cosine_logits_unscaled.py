"""Cosine similarities fed to the cross-entropy as logits, with no temperature / scale.

What the user did: an image->caption retrieval model (perceiver-pytorch Perceiver over frozen patch tokens,
mean over latents, linear projection; small MLP over the pooled caption features), both sides L2-normalised,
trained with the in-batch softmax loss. Like the code-search example of kubeflow/examples#259 the logits
handed to the softmax cross-entropy are the raw similarities of the normalised embeddings,
`logits = img @ txt.T` (cosines in [-1, 1]), with no temperature and no learnable logit scale.

What went wrong and why: softmax over values confined to [-1, 1] cannot become confident. Even a perfect
embedding (diagonal cosine 1, every negative at cosine ~0, which is what B = 64 rows in 32 dimensions can
at best approach) leaves the matching caption at probability e / (e + 63) ~ 0.04, i.e. a loss of
ln(1 + 63/e) ~ 3.2 against ln 64 = 4.16. The loss floor sits at ~0.77 ln B however well the encoders
align, and the gradient through the flat softmax is small, so the run plateaus there: the temperature is
effectively 1 where contrastive training needs ~0.07.

Threads: kubeflow/examples#259 ("[code_search] Fix the loss function"): using a cosine (distance) bounded
in [0, 2] directly as the logit of `sparse_softmax_cross_entropy_with_logits` is reported as a bug, since
logits are un-normalised scores and the bounded values are squashed into a nearly uniform distribution.
KovenYu/MAR#27: asked why the cosine similarity is "inflated by a scale of 30", the maintainer answers that
the softmax loss has a bound set by the feature norm (NormFace), so cosine logits must be scaled.

Fix (fixed=True): scale the cosines before the softmax with a learnable logit scale initialised at
1/0.07 (CLIP's `logit_scale.exp() * img @ txt.T`).

Validation (validate.py --half test32, 100 steps, B=64, final loss / ln B):
  fault: seed 0 0.7904, seed 1 0.7922, seed 2 0.7890 (loss 3.28-3.29 vs ln 64 = 4.159)
  fixed: seed 0 0.0411, seed 1 0.0547, seed 2 0.0424

Ground truth: temperature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("kubeflow/examples#259", "KovenYu/MAR#27")
CAUSE = "temperature"
FAMILY = "normalisation and temperature"


class CaptionRetriever(nn.Module):
    """Perceiver image tower and MLP caption tower; a learnable logit scale only when `scaled`."""

    def __init__(self, scaled: bool = False):
        super().__init__()
        from perceiver_pytorch import Perceiver

        self.perceiver = Perceiver(num_freq_bands=4, depth=2, max_freq=8.0, input_channels=D, input_axis=1,
                                   num_latents=8, latent_dim=D, cross_heads=1, latent_heads=2,
                                   cross_dim_head=8, latent_dim_head=8, final_classifier_head=False,
                                   fourier_encode_data=False)
        self.img_proj = nn.Linear(D, E)
        self.caption = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        if scaled:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, captions):
        lat = self.perceiver(tokens, return_embeddings=True)  # (B, T, D) -> (B, latents, D)
        img = F.normalize(self.img_proj(lat.mean(1)), dim=-1)
        txt = F.normalize(self.caption(captions), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, captions = token_pairs(1024, seed=seed)
    B = 64
    model = CaptionRetriever(scaled=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    try:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            x, c = tokens[idx], captions[idx]
            img, txt = model(x, c)
            if fixed:
                logits = model.logit_scale.exp() * img @ txt.t()
            else:  # the user's code: cosine similarities straight into the softmax
                logits = img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=x)
            optimizer.step()
            optimizer.zero_grad()
    finally:
        session.close()
