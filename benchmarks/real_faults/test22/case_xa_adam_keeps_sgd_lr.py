"""Switching SGD to Adam but keeping SGD's learning rate: a tiny transformers CLIP collapses at chance.

What the user did: their image-text alignment script trained a CLIP (transformers CLIPModel, both towers
from scratch) with SGD, Nesterov momentum 0.9, lr 0.1, weight decay 1e-4 and gradient clipping at 1.0,
and it learned. They then swapped the optimizer line for `torch.optim.Adam(model.parameters(), lr=lr, ...)`
and changed nothing else: the same `lr` variable, 0.1, the same clipping. The loss stopped decreasing
(they also tried other learning rates; none made the loss move).

What went wrong and why: SGD's step is lr times the gradient, and the gradients of a normalised
contrastive loss are small, so an SGD lr of 0.1 moves each weight by far less than 0.1 (and the clip at
1.0 bounds the whole step). Adam divides by the running RMS of each gradient: every coordinate moves by
about lr per step whatever the gradient's size (clipping the gradient's norm changes nothing for Adam,
whose update is scale-invariant). With lr 0.1 each step rewrites the 32-wide layers (weights of scale
~0.02 move by 0.1 per coordinate), the LayerNorm'd towers saturate, and the embeddings collapse: the
logits become constant and the loss sits at exactly ln(B). The maintainers' answer in both threads: the
learning rate that suits SGD is far too high for Adam; lower it by one to two orders of magnitude.

Threads:
- YijinHuang/pytorch-classification#2: switched the default SGD (+Nesterov) to Adam, training "directly
  cannot work" (kappa 0, one class predicted); the maintainer: when you change the optimizer the lr must
  change too, the default 0.001 is too high for Adam, 0.00003 trains to ~80% kappa.
- rstrudel/segmenter#47: SGD works, Adam does not even start decreasing the loss; the maintainer: Adam is
  much more aggressive, use a much lower learning rate.

Fix (fixed=True): the same Adam with the learning rate lowered 100x, to 1e-3.

Validation (validate.py, 100 steps, B=32, final loss = mean of the last 5 steps, ln(32) = 3.4657):
- fault (Adam, lr 0.1): final/ln(B) = 1.000, 1.000, 1.000 on seeds 0, 1, 2 (loss 3.4657 from step ~10 on:
  all image embeddings identical, cosine 1.000, logits constant; the median weight tensor moved by 5.6x
  its initial norm on seed 0);
- fixed (Adam, lr 1e-3): final/ln(B) = 0.262, 0.278, 0.262;
- for reference, the user's SGD recipe (lr 0.1, Nesterov, clip 1.0) ends at 0.277, 0.373, 0.255.

Ground truth: learning_rate_too_high.
"""

from __future__ import annotations

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("YijinHuang/pytorch-classification#2", "rstrudel/segmenter#47")
CAUSE = "learning_rate_too_high"
FAMILY = "optimizer setup"

B = 32
LR = 0.1            # the learning rate of the SGD recipe this script started from
WEIGHT_DECAY = 1e-4
MAX_GRAD_NORM = 1.0


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, input_ids = image_caption_pairs(1024, seed)
    model = tiny_clip(seed)
    model.train()

    # was: torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=WEIGHT_DECAY)
    lr = 1e-3 if fixed else LR
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        session.observe(step, losses={"clip": out.loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B, inputs=pixels[idx])
        optimizer.step()
    session.close()
