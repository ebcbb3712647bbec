"""L2-normalised embeddings fed to the softmax with no scale: cosine logits in [-1, 1] can never be confident.

What the user did: an image->text aligner (flamingo-pytorch PerceiverResampler over frozen-backbone patch
tokens, mean over latents, a projection; a small MLP over pooled text features). Following the advice to
put an L2 normalisation in front of the loss, both towers end in `F.normalize`, and the logits are the raw
cosine matrix `img @ txt.T`, fed to the symmetric InfoNCE (cross-entropy in both directions). Nothing
multiplies the cosines: there is no temperature / scale layer after the normalisation.

What went wrong and why: after normalisation every logit lies in [-1, 1], so a row's softmax can put at most
e^2 times more mass on the matching caption than on any other. Even a perfect alignment (matched cosine 1,
the B-1 others spread at -1/(B-1)) leaves a loss of ln(1 + (B-1) e^-(1+1/(B-1))) = 3.17 for B=64, 0.76
ln(B): however well the towers align the pairs, the loss can only fall from ln(B) to that floor, and the
cross-entropy's gradient through such flat softmaxes stays weak on the way. This is what the thread reports:
with an L2-normalisation layer in front of the classifier "softmax loss is decreasing very slow, compared to
the one without"; the maintainer's
answer is the NormFace paper, whose point is that normalised features must be rescaled by a scale s
(a temperature 1/s) before the softmax, and the SphereFace authors say the same ("you have to rescale the
normalized feature with a parameter s in order to make the network converge").

Threads: happynear/FaceVerification#48 (softmax loss barely decreases after adding an L2 normalisation
layer; the answer is NormFace's scale), wy1iu/sphereface#43 (the authors: feature normalisation needs a
rescaling parameter s to converge).

Fix (fixed=True): a learnable scale after the normalisation, CLIP's `logit_scale` initialised at ln(1/0.07)
(NormFace's trainable scale layer): logits = exp(logit_scale) * img @ txt.T.

Validation (validate.py --half test23, seeds 0/1/2, 100 steps, B=64, ln(B)=4.159; final = mean of the last
5 steps): fault final loss 3.300 / 3.309 / 3.300, ratio 0.793 / 0.796 / 0.794 (against the 0.76 floor of
cosine logits), fixed 0.198 / 0.237 / 0.197, ratio 0.048 / 0.057 / 0.047.

Ground truth: temperature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from common import DT, D, E, clip_loss, token_pairs
from torch import nn

THREADS = ("happynear/FaceVerification#48", "wy1iu/sphereface#43")
CAUSE = "temperature"
FAMILY = "normalisation and temperature"

B = 64


class Aligner(nn.Module):
    def __init__(self, scaled: bool = False):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        # the fix: a trainable scale after the normalisation (NormFace / CLIP logit_scale)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07))) if scaled else None

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        img = F.normalize(self.proj(lat.mean(1)), dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner(scaled=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    try:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = img @ txt.t()  # cosine similarities used as logits
            if model.logit_scale is not None:
                logits = model.logit_scale.exp() * logits
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tokens[idx].mean(1))
            optimizer.step()
    finally:
        session.close()
