"""A learning rate far too low for training from scratch: the weights barely move and the loss stays
at ln(B).

Thread: mlfoundations/open_clip#41 ("Loss slowly decreases", lr 8e-6; maintainer: "Any reason for using
LR 8e-6? I would go much higher, like 1e-3 or 5e-4"); openai/CLIP#150 recommends 1e-7..1e-8 for
fine-tuning pretrained CLIP, values that stall a model trained from scratch. Here: a perceiver-pytorch
Perceiver aligner from random init at lr 1e-7.
Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("mlfoundations/open_clip#41", "openai/CLIP#150")
CAUSE = "learning_rate_too_low"
FAMILY = "optimizer_schedule"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(seed=seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-7, weight_decay=0.2)  # BUG: a fine-tuning lr for a model from scratch
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
