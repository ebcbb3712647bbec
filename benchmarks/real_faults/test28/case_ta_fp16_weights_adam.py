"""CLIP fine-tuned with its weights in fp16 and a plain Adam: NaN after the first update.

What the user did: they loaded a CLIP checkpoint the way the CLIP loaders do on a GPU, which hands back the weights
already converted to fp16 (here: a tiny transformers CLIP from a tiny config, random weights, cast with `.half()`
as the loader does), built `torch.optim.Adam(model.parameters(), lr=1e-3)` on those fp16 parameters and fine-tuned
it with a symmetric InfoNCE on `logits_per_image`, batch 32. The first batch trains; from the second batch on
`encode_text` / `encode_image` output NaN. Lowering the lr (to 1e-8 in the thread) does not help.

What went wrong and why: the optimizer state and the update are computed in the parameters' dtype. Adam's update is
m / (sqrt(v) + eps): in fp16 the default eps = 1e-8 rounds to 0 (the smallest fp16 subnormal is ~6e-8), and every
element whose gradient is exactly 0 or underflows in fp16 (token-embedding rows of tokens absent from the batch,
tiny attention-bias gradients) has m = v = 0, so its update is 0 / 0 = NaN whatever the lr. Measured here (seed 0):
after the first `optimizer.step()` 192 token-embedding entries, 25 k-projection bias entries and one MLP weight are
NaN, the same with lr 1e-8; every caption that uses one of those tokens then encodes to NaN, and the loss is NaN
from step 1 on.

Threads: OFA-Sys/Chinese-CLIP#64 (fine-tuning a `load_from_name` model: "after the 1st batch updates the parameters,
clip_model.encode_text() outputs NaN in the 2nd batch"; lr 1e-8 still NaN; the same code with the fp32
transformers ChineseCLIPModel trains), openai/CLIP#144 (a fine-tuned CLIP's `encode_image` gives NaN from the
second batch on; "Casting the model to fp32 seems to have solved the problem").

Fix (the threads'): keep fp32 master weights: cast the model to fp32 (`model.float()`, inputs fp32) before building
the optimizer (autocast for the forward is the mixed-precision way to keep the speed).

Validation (validate.py, 100 steps, B = 32, ln(B) = 3.4657; final = mean of the last 5 steps):
    seed 0: fault non-finite (NaN from step 1), fixed 0.8736 (0.252 ln B)
    seed 1: fault non-finite (NaN from step 1), fixed 0.8884 (0.256 ln B)
    seed 2: fault non-finite (NaN from step 1), fixed 0.9201 (0.266 ln B)

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import torch

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("OFA-Sys/Chinese-CLIP#64", "openai/CLIP#144")
CAUSE = "nonfinite_divergence"
FAMILY = "mixed precision"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, captions = image_caption_pairs(1024, seed)
    # what the loader returns on a GPU: the weights already in fp16
    model = tiny_clip(seed).half()
    dtype = torch.float16
    if fixed:  # the threads' fix: fp32 weights (and so fp32 optimizer state)
        model = model.float()
        dtype = torch.float32
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        order = torch.randperm(len(pixels), generator=gen)
        for start in range(0, len(order) - B + 1, B):
            idx = order[start:start + B]
            out = model(input_ids=captions[idx], pixel_values=pixels[idx].to(dtype))
            logits = out.logits_per_image
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=logits, batch_size=B)
            optimizer.step()
            step += 1
            if step >= steps:
                break
    session.close()
