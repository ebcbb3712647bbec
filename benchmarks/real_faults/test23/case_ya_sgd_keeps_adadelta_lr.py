"""A tiny CLIP trained with SGD at the learning rate that was tuned for Adadelta.

What the user did: their image-caption loop started from the PyTorch MNIST example
(`optim.Adadelta(model.parameters(), lr=args.lr)` with `--lr` defaulting to 1.0), where it learned (this
loop with Adadelta at 1.0 ends at 0.31 / 0.32 / 0.27 of ln(64), seeds 0/1/2). They
swapped the optimizer line for `optim.SGD(..., momentum=0.9, nesterov=True)` and kept `lr=args.lr`, i.e.
1.0. The contrastive loss falls from the first batch's value to exactly ln(B) after one step and never
leaves it: every image row and every text row points the same way (mean pairwise cosine 0.997-1.0),
and the (log) logit scale keeps being pushed down.

Why: Adadelta's `lr` is a multiplier on an update that is already normalised by running RMS of the
gradients and the updates (its steps are small whatever `lr` is), so 1.0 is its natural value. Plain SGD
applies `lr * grad` directly: at 1.0 the very first step changes some weight matrices of the
transformers by 30-140x their own norm (median over matrices 0.35-1.1x, seeds 0-2), both towers collapse
onto one direction and the gradient that could separate the pairs is gone. Same objective, same model:
only the step size is wrong for the optimizer it was given.

Threads: pytorch/examples#736 ("Changing the optimizer to optim.SGD produces all nan for the loss" in
the MNIST example, which uses Adadelta at lr 1.0; the maintainers' answer: "If you want to switch to SGD
then you should also use a lower learning rate").

Fix (fixed=True): the thread's fix, a learning rate suited to SGD (0.002, same momentum/nesterov).

Validation (validate.py --half test23, final loss / ln(64) over the last 5 steps):
  fault  seeds 0/1/2: 1.000 / 1.000 / 1.000 (final 4.159 / 4.159 / 4.159)
  fixed  seeds 0/1/2: 0.372 / 0.201 / 0.263 (final 1.549 / 0.837 / 1.094)

Ground truth: learning_rate_too_high.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import image_caption_pairs, tiny_clip

THREADS = ("pytorch/examples#736",)
CAUSE = "learning_rate_too_high"
FAMILY = "optimizer setup"

B = 64
ADADELTA_LR = 1.0  # the MNIST example's --lr default, tuned for optim.Adadelta


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    model = tiny_clip(seed)
    pixels, ids = image_caption_pairs(1024, seed)
    loader = DataLoader(TensorDataset(pixels, ids), batch_size=B, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))

    lr = 0.002 if fixed else ADADELTA_LR
    # was: optimizer = torch.optim.Adadelta(model.parameters(), lr=ADADELTA_LR)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)

    session = watch(model, optimizer, batch_size=B)
    model.train()
    step = 0
    while step < steps:
        for pix, tok in loader:
            if step >= steps:
                break
            out = model(input_ids=tok, pixel_values=pix, return_loss=True)
            loss = out.loss
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=out.logits_per_image)
            optimizer.step()
            step += 1
    session.close()
