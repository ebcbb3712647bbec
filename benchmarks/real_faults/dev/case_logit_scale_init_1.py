"""A logit scale initialised to 1 (log space) instead of ln(1/0.07): exp(1) = 2.7 caps the cosine logits
at +-2.7, so even a perfect ranking keeps most of ln(B) and the loss plateaus high.

Thread: huggingface/transformers#13430 (CLIPModel had `self.logit_scale = nn.Parameter(torch.ones([]))`,
OpenAI's CLIP `torch.ones([]) * np.log(1 / 0.07)`; "loss get greater after 2 epoch"), fixed by
huggingface/transformers#13436 (`logit_scale_init_value`). Reproduced with today's CLIPModel and
`logit_scale_init_value=1.0`, the value the old code hard-wired; the scale is learned as in the thread.
Ground truth: temperature.
"""

from __future__ import annotations

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("huggingface/transformers#13430", "huggingface/transformers#13436")
CAUSE = "temperature"
FAMILY = "normalisation_temperature"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(seed=seed)
    model = tiny_clip(seed, logit_scale_init_value=1.0)  # BUG: ln-scale 1 (scale 2.7), not ln(1/0.07) = 2.66
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(ids), (BATCH,))
            out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
            opt.zero_grad()
            out.loss.backward()
            w.observe(step, losses={"clip": out.loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
