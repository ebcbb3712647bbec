"""A tiny transformers CLIPModel (random weights, built from a config) trained with gradient accumulation: 4
micro-batches of 32 pairs per optimizer step. The user divides each micro-batch's `out.loss` by the number of
accumulation steps before `backward()` (right: the accumulated gradient is then the mean over micro-batches) and logs
that divided value as the step's CLIP loss.

What goes wrong: the logged loss is the objective divided by 4. At the first step it reads ~1.0 while the real
symmetric InfoNCE over the step's 32 x 32 logits is ~3.9-4.3 (ln 32 = 3.47): the curve starts at ~0.3 x ln(32), far
below chance, and ends at a quarter of the true value, so runs with different accumulation settings (and an undivided
validation loss) are not comparable, and a reader of the curve cannot tell where chance is. The training itself
is unaffected.

Thread: Modalities/modalities#118 ("Previously with gradient accumulation, the loss was divided by the number of
gradient accumulation steps. This normalised loss was then logged. From a logging perspective, each train step is
equivalent to one gradient accumulation step and therefore the normalisation was not needed.").

Fix (fixed=True): keep the division for `backward()`, log the undivided micro-batch loss (`out.loss`).

Validation (validate.py, seeds 0/1/2, 100 optimizer steps = 400 logged micro-steps, ln(32) = 3.466; final logged
CLIP loss / ln(B)): fault logged 0.142 / 0.127 / 0.112 (ratio 0.041 / 0.037 / 0.032; first logged value 1.07 / 0.98
/ 1.01), i.e. exactly a quarter of the true loss of the same run; fixed (the true loss) 0.568 / 0.509 / 0.449 (ratio
0.164 / 0.147 / 0.130; first value 4.27 / 3.93 / 4.04).

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("Modalities/modalities#118",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

MICRO_B = 32  # micro-batch: the contrastive loss of each forward is over these 32 pairs
ACCUM = 4  # gradient-accumulation steps per optimizer step


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, input_ids = image_caption_pairs(4096, seed=seed)
    model = tiny_clip(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    session = watch(model, optimizer, batch_size=MICRO_B)
    g = torch.Generator().manual_seed(seed + 1)
    micro_step = 0
    for step in range(steps):
        optimizer.zero_grad()
        for _ in range(ACCUM):
            idx = torch.randint(len(pixels), (MICRO_B,), generator=g)
            out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
            loss = out.loss / ACCUM  # normalised so the accumulated gradient is the mean over micro-batches
            loss.backward()
            logged = out.loss.detach() if fixed else loss  # modalities#118: the normalised value was what got logged
            session.observe(micro_step, losses={"clip": logged},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=out.logits_per_image, batch_size=MICRO_B)
            micro_step += 1
        optimizer.step()
    session.close()
