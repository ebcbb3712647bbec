"""A flamingo-pytorch PerceiverResampler aligner trained with a hand-written CLIP loss whose logits are the
plain cosine similarities of the L2-normalised image and text rows: no temperature, no logit scale. The
logits can only span [-1, 1], the softmax over the batch can never become confident, and the loss plateaus
on the bound that this range sets (about 0.8 ln(B) here) however well the rows are ordered.

What the user did: in zergylord/oneshot#2 (matching networks) the user normalised both sides of the
similarity, fed the cosines straight into the softmax cross-entropy, and "spent days trying to improve the
performance with normal cosine similarity" (the maintainer: normalising both sides "degrades performance
significantly"); the author quoted in AntreasAntoniou/MatchingNetworks#21 found the same set-up made "the
optimization ... more unstable", and KaihuaTang/Long-Tailed-Recognition.pytorch#26 reports a cosine
classifier with "no performance improvement". Here: `img, txt = F.normalize(...)`, `logits = img @ txt.t()`,
`clip_loss(logits)`.

What went wrong and why: "softmax expects non normalized logits, while normal cosine similarity is
normalized to [-1,1]" (#2); the maintainer in #26: the cosine classifier did not improve "probably because you
didn't add a scale parameter to the logits ... The scale parameter will change the distribution after the
softmax activation". With unit rows each logit is a cosine in [-1, 1], so a row's matching pair can beat a
negative by at most exp(2) in probability: with B = 128 candidates the cross-entropy cannot fall below
about ln(e + 127 e^(-1/127)) - 1 = 3.86 (0.80 ln(B)) even for a perfect ordering, and the gradient shrinks
as the loss nears that bound. The run reaches it within ~50 steps and stays (3.94 at step 60, 3.95 at 99).

The fix: divide the cosine logits by a temperature, tau = 0.07 (the CLIP value; "tuning the temperature of
softmax", #2), i.e. `logits = img @ txt.t() / 0.07`.

Validation (validate.py, 100 steps, B = 128, chance ln(B) = 4.852; final loss / ln(B)):
    seed 0: fault 0.813, fixed 0.050
    seed 1: fault 0.812, fixed 0.045
    seed 2: fault 0.812, fixed 0.041

Ground truth: temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from flamingo_pytorch import PerceiverResampler
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("zergylord/oneshot#2", "AntreasAntoniou/MatchingNetworks#21",
           "KaihuaTang/Long-Tailed-Recognition.pytorch#26")
CAUSE = "temperature"
FAMILY = "normalisation and temperature"

B = 128
TEMPERATURE = 0.07


class Aligner(nn.Module):
    """Frozen-backbone patch tokens -> PerceiverResampler -> mean of latents -> projection; text -> projection."""

    def __init__(self):
        super().__init__()
        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        img = F.normalize(self.proj(lat.mean(1)), dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(n=4096, seed=seed)
    model = Aligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    session = watch(model, optimizer, batch_size=B)
    g = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = img @ txt.t()
        if fixed:
            logits = logits / TEMPERATURE
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B)
        optimizer.step()
    session.close()
