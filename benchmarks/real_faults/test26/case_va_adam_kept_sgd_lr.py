"""Optimizer swapped from SGD to Adam, the SGD learning rate kept: a tiny CLIP never leaves chance.

What the user did: an image-text alignment script (transformers `CLIPModel`, both towers trained, the
model's own symmetric contrastive loss via `return_loss=True`) had been tuned for SGD with momentum,
`lr=0.05`. The user switched the optimizer line to `torch.optim.Adam(model.parameters(), lr=LR)` and left
`LR` as it was.

What went wrong and why: SGD's step is lr x gradient, so 0.05 is a small step when the gradients are
small; Adam normalises every coordinate by its running RMS, so its step is ~lr per coordinate whatever the
gradient's size. At 0.05 the very first Adam steps move every weight of the 32-wide towers (typical weight
~0.02) by more than its own magnitude: the projections and attention layers are rewritten on each step,
the image and the text embeddings collapse to one direction each (mean pairwise cosine 0.997 / 0.9997 at
the end on seed 0) and the CLIP loss sits at ln(B) for the whole run. The same happened in DeepLabCut when
Apple-silicon users were switched to Adam (SGD crashed there) with the SGD learning-rate schedule left in
place: the models "almost always" diverged within a few iterations; the fix gave Adam its own, much lower
learning rate.

Thread: DeepLabCut/DeepLabCut#2393 ("update the lr when switching to adam optimizer": the SGD schedule kept
for Adam made training diverge in under 5 iterations; with an Adam-sized lr it converged).

Fix (fixed=True): Adam with an Adam-sized learning rate (1e-3, its default) instead of the SGD value.

Validation (validate.py, B=64, ln(B)=4.1589, 100 steps, final loss / ln(B) on seeds 0, 1, 2):
fault 0.9996 / 1.0000 / 1.0000 (final 4.1573 / 4.1589 / 4.1589); fixed 0.3182 / 0.2713 / 0.1867.

Ground truth: learning_rate_too_high.
"""

from __future__ import annotations

import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("DeepLabCut/DeepLabCut#2393",)
CAUSE = "learning_rate_too_high"
FAMILY = "optimizer setup"

B = 64
N_PAIRS = 2048
LR = 0.05  # tuned for torch.optim.SGD(momentum=0.9) in the original recipe


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, input_ids = image_caption_pairs(N_PAIRS, seed=seed)
    model = tiny_clip(seed)
    model.train()

    lr = 1e-3 if fixed else LR  # fixed: Adam gets its own learning rate
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    gen = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, N_PAIRS, (B,), generator=gen)
        out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
        loss = out.loss
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B, inputs=pixels[idx])
        optimizer.step()
    session.close()
