"""Fine-tuning a CLIP model in half precision the short way: the user casts the whole transformers CLIPModel
with `model.half()` (weights, gradients and therefore the Adam moments all float16) and trains it with a plain
`torch.optim.Adam(model.parameters(), lr=1e-3)`, default eps=1e-8.

What went wrong and why: the first forward/backward is fine (loss 3.8-4.7), but the first optimizer step writes
inf/NaN into the weights and every later loss is NaN. Adam keeps its state in the parameter's dtype: the second
moment (1 - beta2) * g^2 = 1e-3 * g^2 underflows to 0 in float16 for every gradient below ~8e-3 (a third of
this model's gradient entries), and eps=1e-8 itself rounds to 0 in float16, so the denominator
sqrt(v) + eps is exactly 0: m / 0 gives inf (and 0 / 0 NaN) in the update. From step 1 the towers output NaN.

Thread: FlagAI-Open/FlagAI#250 (CLIP fine-tuning example: loss None/NaN after the first iteration with fp16
on; with SGD the loss is normal, the reporter suspected Adam; maintainers: with fp16 on, an fp16 model should
be trained with FusedAdam, i.e. an Adam whose moments and master weights are kept in fp32).

Fix (fixed=True): keep the parameters (and so Adam's state) in float32 and run the forward in float16 under
`torch.autocast` - the mixed-precision recipe, where the optimizer only ever sees fp32 master weights.

Validation (validate.py --half test20, B=32, ln B = 3.4657, 100 steps; final = mean of the last 5 steps):
    seed 0: fault non-finite from step 1 (first loss 4.7422)   fixed 0.8176 (ratio 0.2359)
    seed 1: fault non-finite from step 1 (first loss 3.7812)   fixed 0.8970 (ratio 0.2588)
    seed 2: fault non-finite from step 1 (first loss 4.3086)   fixed 0.9321 (ratio 0.2690)

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import contextlib

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("FlagAI-Open/FlagAI#250",)
CAUSE = "nonfinite_divergence"
FAMILY = "mixed precision"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    model = tiny_clip(seed)  # seeds torch
    pixels, input_ids = image_caption_pairs(1024, seed)
    g = torch.Generator().manual_seed(seed + 1)

    if fixed:
        autocast = lambda: torch.autocast("cpu", dtype=torch.float16)  # fp32 master weights, fp16 compute
    else:
        model = model.half()  # "fp16 training": weights, grads and Adam state in float16
        pixels = pixels.half()
        autocast = contextlib.nullcontext
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    order, pos = torch.randperm(len(pixels), generator=g), 0
    with watch(model, optimizer, batch_size=B) as session:
        for step in range(steps):
            if pos + B > len(pixels):
                order, pos = torch.randperm(len(pixels), generator=g), 0
            idx = order[pos:pos + B]
            pos += B
            with autocast():
                out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
            loss = out.loss
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, image_embeds=out.image_embeds,
                            text_embeds=out.text_embeds, logits=out.logits_per_image, batch_size=B,
                            inputs=pixels[idx])
            optimizer.step()
