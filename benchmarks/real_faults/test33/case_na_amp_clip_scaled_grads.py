"""Mixed precision: gradient clipping runs on the GradScaler's *scaled* gradients (no `scaler.unscale_`
before `clip_grad_norm_`), so every step is clipped to a norm of 1/65536 of the intended one and SGD
barely moves the weights.

What the user did: a transformers CLIPModel built from a tiny config (random weights, ViT and text
transformer, 2 layers each, learnable logit scale) trained contrastively on image/caption pairs with
fp16 autocast and a `torch.amp.GradScaler`, SGD (momentum 0.9, lr 0.05, weight decay 5e-4) and gradient
clipping at max_norm 1.0 for stability. The loop is the AMP recipe with a clip inserted:
`scaler.scale(loss).backward(); clip_grad_norm_(model.parameters(), 1.0); scaler.step(optimizer);
scaler.update()`.

What went wrong and why: `scaler.scale(loss)` multiplies the loss, hence every gradient, by the loss scale
(65536 at start, halved on each step whose fp16 gradients overflow; those steps are skipped).
`clip_grad_norm_` then sees total norms of 4e5..1.6e6 (true norms of 7..50 times the scale) and rescales
the gradients to norm 1.0; `scaler.step` divides them by the scale afterwards, so the gradient SGD
applies has a norm of 1/scale (~1e-5..1e-4) whatever the true gradient was, instead of 1.0 after a
correct clip: the weights hardly move and the CLIP loss stays above ln(B), where it started. In
Lightning-AI/pytorch-lightning#9330 a user with `precision=16, gradient_clip_val=1` found the gradient
norm after clipping "super small" and traced it to clipping before AMP's unscale;
catalyst-team/catalyst#1319 reports the same ordering bug ("Gradients need to be unscaled before
clipping"). PyTorch's AMP notes: unscale first, then clip.

The fix (the threads'): `scaler.unscale_(optimizer)` between `backward()` and `clip_grad_norm_`, so the
threshold applies to the true gradients; `scaler.step` then skips its own unscale.

Validation (benchmarks/real_faults/validate.py, seeds 0/1/2, 100 steps, B = 32, ln(B) = 3.466):
fault final loss 4.2971 / 3.8161 / 3.9963 (ratio 1.2399 / 1.1011 / 1.1531);
fixed 1.1721 / 1.2979 / 1.1997 (ratio 0.3382 / 0.3745 / 0.3462).

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("Lightning-AI/pytorch-lightning#9330", "catalyst-team/catalyst#1319")
CAUSE = "learning_rate_too_low"
FAMILY = "mixed precision"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pixels, ids = image_caption_pairs(1024, seed=seed)
    model = tiny_clip(seed)  # seeds torch itself
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cpu")
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(ids), (B,), generator=gen)
        px, tok = pixels[idx], ids[idx]
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(input_ids=tok, pixel_values=px)
            logits = out.logits_per_image
            loss = clip_loss(logits)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if fixed:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        session.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=logits, batch_size=B, inputs=px)
        scaler.step(optimizer)
        scaler.update()
    session.close()
