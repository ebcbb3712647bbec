"""Gradient accumulation that sums the micro-batch losses: the logged loss is GA times the objective, so a
CLIP run that learns looks stuck above ln(B).

What the user did (axolotl-ai-cloud/axolotl#2262): trained with `micro_batch_size=1, gradient_accumulation_steps=8`
and compared with `micro_batch_size=8, gradient_accumulation_steps=1`: "BS1GA8 results in 8x higher loss" (from
~83.7 down to ~50, against ~10.5 down to ~6.8) and a grad norm 8x larger; "the loss follows roughly the same
curve". Both numbers behave as the SUM over the accumulated micro-batches: each micro-batch loss is
back-propagated and added to the logged running loss without the 1/GA normalisation (the same symptom the
transformers Trainer showed after its gradient-accumulation loss rework).

Here: a CLIP (transformers CLIPModel, tiny random config) fine-tuned with micro-batches of 16 pairs and 8
accumulation steps (each micro-batch is its own 16x16 contrastive problem, as in any accumulate-then-step
loop without feature caching). The loop does `loss.backward()` on the raw micro loss and `tr_loss += loss`,
then reports `tr_loss` once per optimizer step, the way the trainer's log does. The optimizer is AdamW, so
the 8x larger gradient barely changes the updates: the model learns (its logits' own loss falls well below
ln 16) while the logged "clip" loss is 8x the mean micro-batch loss and ends near or above ln(16) = 2.77
(0.69-1.13 x ln 16) after starting at ~8 x ln 16: the log misstates the objective.

Fix: the normalisation the thread asks for: back-propagate `loss / GA` and log the mean over the
accumulated micro-batches (`tr_loss += loss.detach() / GA`).

Validation (validate.py, logged "clip" final / ln(16), seeds 0 1 2):
    fault: 1.1318, 1.0585, 0.6920 (logged 3.14, 2.93, 1.92: exactly 8 x the mean micro-batch loss of the
           same step, 0.392, 0.367, 0.240; first logged step 31.4, 26.1, 25.3 = 8 x ~3.5)
    fixed: 0.1415, 0.1323, 0.0865 (logged 0.392, 0.367, 0.240: AdamW makes the two runs' updates the same,
           only the log differs)

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("axolotl-ai-cloud/axolotl#2262",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

MICRO_B, GA = 16, 8


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pixels, ids = image_caption_pairs(2048, seed=seed)
    model = tiny_clip(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed + 1)

    session = watch(model, optimizer, batch_size=MICRO_B)
    for step in range(steps):
        tr_loss = torch.zeros(())
        optimizer.zero_grad()
        for micro in range(GA):
            idx = torch.randperm(len(ids), generator=g)[:MICRO_B]
            out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
            loss = out.loss
            if fixed:
                (loss / GA).backward()
                tr_loss += loss.detach() / GA
            else:
                loss.backward()              # summed over the micro-batches, no 1/GA
                tr_loss += loss.detach()     # logged: the sum over GA micro-batches
        session.observe(step, losses={"clip": tr_loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=MICRO_B, inputs=pixels[idx])
        optimizer.step()
    session.close()
