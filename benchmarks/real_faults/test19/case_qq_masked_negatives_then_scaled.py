"""False negatives masked with -inf before the learned logit scale is applied: NaN scale, NaN run.

What the user did: aligned frozen-backbone patch tokens (flamingo-pytorch PerceiverResampler + projection) with
caption features on a COCO-style set, five captions per image, sampling (image, caption) pairs at random. A batch
therefore often holds two captions of the same image, and the user, to stop scoring those as negatives, masked
the off-diagonal same-image entries of the similarity matrix with -inf, then multiplied by CLIP's learned
temperature `logit_scale.exp()` and took the symmetric cross-entropy.

What went wrong and why: the loss itself is finite (a -inf logit only gets zero probability), but the backward of
`masked * scale` with respect to the scale is `sum(grad * masked)`, and at every masked entry that is
0 * (-inf) = NaN. The gradient of `logit_scale` is NaN on the first batch that holds a duplicate image; AdamW
writes NaN into the parameter and its moments, every logit of the next step is NaN, and the run never recovers
(the embedding gradients of that first step are still finite, which hides where it came from). This is the bug
NVIDIA-NeMo/Automodel#3850 fixed in its InfoNCE loss: padded hard negatives were set to -inf before the division
by the learned temperature, so the loss stayed finite while the temperature's gradient became NaN (the division's
backward meets the infinite operand although the masked candidate contributes nothing to the loss);
erickrf/multiffn-nli#10 reports -inf masking turning into NaN losses the same way.

Fix (the one in NVIDIA-NeMo/Automodel#3850): scale the logits first and apply the -inf mask last, so the
infinite values never enter the temperature's derivative.

Validation (validate.py --half test19, 100 steps, B=32, final = mean of the last 5 logged losses / ln 32):
  fault: seeds 0, 1, 2 non-finite (loss NaN from step 1 on every seed; step 0 finite, 5.64 / 4.36 / 6.03)
  fixed: seed 0 0.0186, seed 1 0.0192, seed 2 0.0250 (final 0.0644, 0.0664, 0.0868)

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import DT, ResamplerAligner, token_pairs

THREADS = ("NVIDIA-NeMo/Automodel#3850", "erickrf/multiffn-nli#10")
CAUSE = "nonfinite_divergence"
FAMILY = "normalisation and temperature"

N_IMAGES, CAPTIONS_PER_IMAGE = 256, 5


def coco_style_pairs(seed: int):
    """Patch tokens per image and five paraphrased caption features per image."""
    tokens, texts = token_pairs(N_IMAGES, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    captions = texts[:, None, :] + 0.1 * torch.randn(N_IMAGES, CAPTIONS_PER_IMAGE, DT, generator=gen)
    return tokens, captions


def contrastive_loss(sim, image_ids, logit_scale, fixed):
    same_image = image_ids[:, None] == image_ids[None, :]
    false_neg = same_image & ~torch.eye(len(sim), dtype=torch.bool)
    if fixed:
        logits = (logit_scale * sim).masked_fill(false_neg, float("-inf"))
    else:
        logits = sim.masked_fill(false_neg, float("-inf")) * logit_scale
    labels = torch.arange(len(sim))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)), logits


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    tokens, captions = coco_style_pairs(seed)
    torch.manual_seed(seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        pair = torch.randint(0, N_IMAGES * CAPTIONS_PER_IMAGE, (B,), generator=gen)
        image_ids, caption_ids = pair // CAPTIONS_PER_IMAGE, pair % CAPTIONS_PER_IMAGE
        img, txt = model(tokens[image_ids], captions[image_ids, caption_ids])
        loss, logits = contrastive_loss(img @ txt.t(), image_ids, model.logit_scale.exp(), fixed)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                        logits=logits, batch_size=B, inputs=tokens[image_ids])
        optimizer.step()
    session.close()
