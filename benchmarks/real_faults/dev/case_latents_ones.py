"""A Perceiver resampler whose latents start identical (all ones): every latent query attends the same
way, gets the same gradient, and the resampler outputs one vector repeated `num_latents` times.

Threads: huggingface/transformers#31151 (Idefics2's perceiver resampler initialised its latents with
`torch.ones`; "they should be initialized as random numbers ... This should fix instability issues"),
lucidrains/perceiver-pytorch#16 ("the latents can also be zeros?"). Here: flamingo-pytorch's
PerceiverResampler with its latents overwritten by ones, as a port of that init would do.
Ground truth: symmetric_latents.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/transformers#31151", "lucidrains/perceiver-pytorch#16")
CAUSE = "symmetric_latents"
FAMILY = "architecture"
BATCH = 32


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(seed=seed)
    model = ResamplerAligner()
    with torch.no_grad():
        model.resampler.latents.fill_(1.0)  # BUG: constant latent init (Idefics2 before #31151)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
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
