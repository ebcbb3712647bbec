"""NaN after a single optimizer step: the model's weights are fp16 (as `clip.load` returns them) and Adam
runs on them directly; eps=1e-8 underflows to 0 in half precision, so a parameter whose gradient is 0
gets 0/0 = NaN, and the NaN reaches every output on the next forward.

Thread: openai/CLIP#40 ("NaN values after a single gradient step", Adam on the fp16 model; the answer:
keep fp32 master weights or convert to fp32 for the step, see openai/CLIP#57 and the
`convert_models_to_fp32` helper of openai/CLIP#83). Here: a transformers CLIPModel cast to half.
Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("openai/CLIP#40", "openai/CLIP#83")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 32


def train(watch, steps: int = 30, seed: int = 0) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(seed=seed)
    model = tiny_clip(seed).half()  # BUG: fp16 weights updated by Adam in fp16 (no fp32 master copy)
    opt = torch.optim.Adam(model.parameters(), lr=5e-5, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.2)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(ids), (BATCH,))
            out = model(input_ids=ids[idx], pixel_values=pixels[idx].half(), return_loss=True)
            opt.zero_grad()
            out.loss.backward()
            w.observe(step, losses={"clip": out.loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
