"""The temperature divided instead of multiplied: `logits = img @ txt.T / logit_scale.exp()` with the scale
at 14.3 makes the logits span +-0.07, the softmax is flat and the loss cannot leave ln(B).

Threads: LAION-AI/CLAP#57 (is the learned 14.28 a multiplier or a temperature to divide by?), openai/CLIP#46
("shouldn't initial temperature be 0.07 ... `logit_scale = nn.Parameter(torch.ones([]))*(1/0.07)`"):
the scale/temperature convention is easy to invert. Here: a perceiver-pytorch Perceiver aligner with
open_clip's ln(1/0.07) parameter used as a divisor.
Ground truth: temperature.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("LAION-AI/CLAP#57", "openai/CLIP#46")
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 32


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(seed=seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = img @ txt.t() / model.logit_scale.exp()  # BUG: divides by the scale (a temperature of 14.3)
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
