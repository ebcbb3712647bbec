"""Logits divided by the CLIP logit scale instead of multiplied by it.

What the user did: a Perceiver-resampler image tower (flamingo-pytorch) and a linear text tower, L2
normalised, with open_clip's learnable `logit_scale` initialised at ln(1/0.07). When writing the
similarity they computed `img @ txt.T / logit_scale.exp()` (as in a public fine-tuning script) rather
than CLIP's `logit_scale.exp() * img @ txt.T`.

Why it fails: cosines lie in [-1, 1]; divided by exp(ln(1/0.07)) = 14.3 they lie in [-0.07, 0.07],
i.e. a temperature of 14.3 instead of 0.07. The softmax over each row is almost exactly uniform
whatever the embeddings do, so the loss cannot leave ln(B) (its best possible value at this scale is
about ln(B) - 0.14), and the gradient reaching the towers is shrunk by the same factor 200. The
learnable scale would have to travel from 2.66 to below 0 in log space to recover, which Adam at
lr 1e-3 does not do in a run of this length.

Thread: zer0int/CLIP-fine-tune#10 ("your code is `/ model.logit_scale().exp` but in openai_clip is
`* model.logit_scale().exp`"). Fix: multiply the cosine logits by logit_scale.exp().

Validation (validate.py --half test21, seeds 0/1/2, 100 steps, B=32, ln B = 3.4657): fault final /
ln(B) = 0.9786 / 0.9785 / 0.9787; fixed = 0.0243 / 0.0255 / 0.0235.

Ground truth: temperature.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("zer0int/CLIP-fine-tune#10",)
CAUSE = "temperature"
FAMILY = "normalisation and temperature"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, optimizer, batch_size=B) as session:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            if fixed:
                logits = scale * img @ txt.t()
            else:
                logits = img @ txt.t() / scale  # the user's line
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, extras={"logit_scale": scale})
            optimizer.step()
