"""Gradient accumulation with the logged training loss divided by the accumulation steps twice: the CLIP loss the
user reads is a quarter of the objective, so a fine run looks 4x better than it is (and a stuck one looks learned).

What the user did: fine-tuned a CLIP model (transformers CLIPModel from a tiny config, random weights) with
gradient accumulation: 4 micro-batches of 32 image-caption pairs per optimizer step, each micro-batch's
`out.loss` divided by the accumulation steps before `backward()` (correct: the accumulated gradient is the mean),
and the divided losses summed into `train_loss` for logging. After the micro-batch loop the logging code divides
`train_loss` by the accumulation steps again, and that value is what goes to the console, the logger and the
watch.

What went wrong and why: `train_loss` is already the mean of the micro-batch losses, because every term was divided
before it was added; the second division makes the logged value mean / 4. The optimization is untouched (the
backward sees the right loss), but every logged number misstates the objective by the accumulation factor: the
first logged value is about 1 where the untrained model's loss is above ln(32) = 3.47, the curve is 4x lower than
a validation loss computed the same way, and a comparison against ln(32) (the chance level of a 32-candidate
softmax) is meaningless. The same bug, fixed by removing the second division: "The loss was being divided by
grad_accumulation_steps twice ... This caused logged training loss to appear ~32x smaller than actual values (e.g.,
0.34 instead of 10.9), while validation loss remained correct. The bug only affected stdout/logfile output, not
training or wandb metrics." (BottleCapAI/NoCap-Test#2); AllenNLP's reported `batch_loss` was likewise the last
micro-batch's loss already divided by the number of batches in the group (allenai/allennlp#4706, merged fix).

Fix (fixed=True): drop the second division (log the mean of the micro-batch losses, the objective itself).

Validation (validate.py, 100 steps, batch 32 per contrastive softmax, ln 32 = 3.466; final / ln(32), seeds 0, 1, 2):
    fault (logged) 0.0450 / 0.0381 / 0.0297 (final 0.156 / 0.132 / 0.103): a quarter of the objective
    fixed          0.1798 / 0.1524 / 0.1190 (final 0.623 / 0.528 / 0.412): the same training run, logged correctly
    first logged value: fault 1.12 / 0.95 / 1.02, fixed 4.50 / 3.80 / 4.07 (the objective at step 0)

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("BottleCapAI/NoCap-Test#2", "allenai/allennlp#4706")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

MICRO_BATCH = 32
ACCUM_STEPS = 4


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    model = tiny_clip(seed)
    pixels, ids = image_caption_pairs(4096, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(len(pixels), generator=g), 0

    session = watch(model, optimizer, batch_size=MICRO_BATCH)
    for step in range(steps):
        train_loss = torch.zeros(())
        for micro in range(ACCUM_STEPS):
            if pos + MICRO_BATCH > len(perm):
                perm, pos = torch.randperm(len(pixels), generator=g), 0
            idx = perm[pos:pos + MICRO_BATCH]
            pos += MICRO_BATCH
            out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
            loss = out.loss / ACCUM_STEPS  # scale for accumulation
            loss.backward()
            train_loss += loss.detach()
        if not fixed:
            train_loss /= ACCUM_STEPS  # NoCap-Test#2: the second division, logging only
        session.observe(step, losses={"clip": train_loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=MICRO_BATCH)
        optimizer.step()
        optimizer.zero_grad()
    session.close()
