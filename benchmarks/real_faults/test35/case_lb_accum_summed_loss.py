"""Gradient accumulation over 8 micro-batches with a logged loss that sums the micro-batch losses instead of
averaging them: the logged CLIP loss of a transformers CLIPModel (tiny config, random weights) ends 2.2-3.2x above
chance while the model, whose gradients are correctly averaged, learns.

What the user did: trained with per-device batch 8 and 8 gradient-accumulation steps; each micro-batch loss is
divided by the accumulation steps before backward() (the gradient is right), and the value reported to the logger
is the running `tr_loss` added up over the micro-batches of the optimizer step, as the trainer in the thread did
after its gradient-accumulation change.

What went wrong and why: the reported number is the sum of 8 micro-batch losses, 8x the objective: "Since GA fix
(#1980), logging does not average loss and grad norm values over accumulation steps, they are summed instead ...
for 8 accumulation steps {'loss': 7.9071 ...} should be {'loss': 0.988 ...}". Read against chance for the batch the
logits are computed on (ln 8 = 2.08), the logged curve ends at 4.6-6.6 and looks like a run that is not learning,
while the step's own logits give a CLIP loss of 0.58-0.83.

The fix: average the logged loss over the accumulation steps (tr_loss / gradient_accumulation_steps); training is
unchanged.

Validation (validate.py, 100 steps, B = 8, chance ln(B) = 2.079; final loss / ln(B)), each step an optimizer step over
8 micro-batches of 8, the final loss the logged one:
  fault: seed 0 2.828, seed 1 3.193, seed 2 2.222
  fixed: seed 0 0.353, seed 1 0.399, seed 2 0.278

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("axolotl-ai-cloud/axolotl#2004",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

B = 8  # per-device (micro) batch
GRADIENT_ACCUMULATION_STEPS = 8
LR = 2e-4


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pixels, input_ids = image_caption_pairs(2048, seed=seed)
    model = tiny_clip(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    session = watch(model, optimizer, batch_size=B)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randperm(len(pixels), generator=g)[: GRADIENT_ACCUMULATION_STEPS * B]
        optimizer.zero_grad()
        tr_loss = torch.zeros(())
        for micro in idx.split(B):
            out = model(input_ids=input_ids[micro], pixel_values=pixels[micro])
            loss = clip_loss(out.logits_per_image)
            (loss / GRADIENT_ACCUMULATION_STEPS).backward()
            tr_loss = tr_loss + loss.detach()
        logged = tr_loss / GRADIENT_ACCUMULATION_STEPS if fixed else tr_loss
        session.observe(step, losses={"clip": logged}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B)
        optimizer.step()
    session.close()
