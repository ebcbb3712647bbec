"""The logit scale decays from 14.3 toward 1 while the loss goes flat; a lower learning rate fixes it.

Thread: mlfoundations/open_clip#815 (AdamW, weight decay 0.1: "the logit_scale converges to 1 ... the
loss becomes constant during this time ... reducing the learning rate resolves this issue"). Here: a
flamingo-pytorch PerceiverResampler aligner under AdamW at lr 0.3 (wd 0.1 on every parameter, the
logit scale included, as in the thread): single steps rewrite the layers, the embeddings stop telling
items apart, and the cheapest way down for the loss is a flatter softmax.
Ground truth: learning_rate_too_high (the thread's fix).
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("mlfoundations/open_clip#815",)
CAUSE = "learning_rate_too_high"
FAMILY = "optimizer_schedule"
BATCH = 64


def train(watch, steps: int = 40, seed: int = 0) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=0.3, weight_decay=0.1)  # BUG: lr far too high for this model
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
