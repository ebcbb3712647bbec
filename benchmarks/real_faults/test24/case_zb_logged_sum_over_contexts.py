"""Logging: the per-device losses of a data-parallel step are added up for the log and never divided by the
number of devices, so the logged CLIP loss is N_CTX times the loss being optimised.

What the user did: a transformers CLIPModel (tiny config, random weights) trained data-parallel the way the
gluon-nlp example scripts do it: each step's batch of 128 pairs is split over N_CTX = 8 contexts
(`split_and_load`, one 8-GPU node), every context runs the model on its 16 image-caption pairs with
`return_loss=True` (the symmetric InfoNCE over its own (16, 16) logits) and backpropagates its share of the mean.
For the log they added every context's loss into the step's running loss, as the example did, and plotted it.

What went wrong and why: the backward pass uses the mean over contexts (each loss / N_CTX), but the logging line
`step_loss += loss.item()` adds the 8 losses without dividing by `len(ctx)`. The logged curve is the sum, 8x the
objective: on seed 0 it starts at 29.5 (8 x 3.69) and, while the model does learn (its own logits' loss falls to ~0.35, 0.13 x
ln(16)), it ends near 3.0, i.e. at ln(16) = 2.77: the log reads as a run stuck at chance. The curve also changes
scale with the number of devices (gluon-nlp#365: "The loss is added n times per iteration where n is number of
GPUs, it should be divided by the length of the context").

Fix (fixed=True, the PR's): divide the accumulated loss by the number of contexts before logging it.

Threads: dmlc/gluon-nlp#365 (fix ppl reporting for training on multi gpu: the loss is added once per context and
must be divided by len(ctx)).

Validation (validate.py, seeds 0/1/2, 100 steps, 16 candidates per context, logged "clip" / ln(16)):
  fault (logged = sum over 8 contexts): 2.9656 / 3.0012 / 2.5737 -> ratio 1.070 / 1.083 / 0.928
  the same runs' objective (mean over contexts = logged / 8): 0.3707 / 0.3752 / 0.3217 -> ratio 0.134 / 0.135 / 0.116
  fixed (logged = mean): 0.3707 / 0.3752 / 0.3217 -> ratio 0.134 / 0.135 / 0.116
The logged loss misstates the objective by the factor N_CTX = 8 on every step (seed 0, first step: 29.50 logged,
3.69 optimised).

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("dmlc/gluon-nlp#365",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

N_CTX = 8  # devices the batch is split over (one 8-GPU node)
B = 16  # pairs per context


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pixels, ids = image_caption_pairs(4096, seed=seed)
    model = tiny_clip(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(ids), (N_CTX * B,), generator=g)
        optimizer.zero_grad()
        step_loss = 0.0
        for px, tok in zip(pixels[idx].split(B), ids[idx].split(B)):  # split_and_load over the contexts
            out = model(input_ids=tok, pixel_values=px, return_loss=True)
            (out.loss / N_CTX).backward()  # the objective: the mean of the contexts' losses
            step_loss += out.loss.item()  # the log: added once per context ...
        if fixed:
            step_loss /= N_CTX  # ... and divided by len(ctx) before it is reported
        # what the user logs, with the last context's embeddings and logits (the ones in hand)
        session.observe(step, losses={"clip": torch.tensor(step_loss)},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B, inputs=px)
        optimizer.step()
    session.close()
