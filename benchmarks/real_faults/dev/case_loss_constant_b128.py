"""Loss constant at ~4.8 with batch 128: a transformers CLIPModel trained with a learning rate that
rewrites the towers each step, so the embeddings collapse and the loss sits at ln(128) = 4.85.

Thread: mlfoundations/open_clip#17 "Loss is constant" (batch 128, loss "constantly at 4.8xxx" for 15
epochs; the maintainers' first suspects: data and a learning rate that does not fit; a smaller lr is also
the fix in open_clip#41 where lr 1e-3 gave NaN). The thread never names its cause; this script reproduces
the symptom with the one the maintainers point at: an lr far too high for AdamW (a value meant for SGD).
Ground truth: learning_rate_too_high.
"""

from __future__ import annotations

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("mlfoundations/open_clip#17", "mlfoundations/open_clip#41")
CAUSE = "learning_rate_too_high"
FAMILY = "optimizer_schedule"
BATCH = 128


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(seed=seed)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.2)  # BUG: an SGD learning rate under AdamW
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(ids), (BATCH,))
            out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
            opt.zero_grad()
            out.loss.backward()
            w.observe(step, losses={"clip": out.loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
