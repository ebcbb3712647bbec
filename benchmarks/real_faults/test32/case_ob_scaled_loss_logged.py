"""Mixed-precision CLIP fine-tuning that logs the GradScaler-scaled loss instead of the loss.

What the user did: a small transformers CLIPModel (tiny config, random weights) trained on image/caption pairs
with the model's own contrastive loss (`return_loss=True`) and a `GradScaler` for mixed precision. The loop
follows the AMP recipe, except that the variable it keeps for the progress bar / logger is the one it calls
`backward()` on: `loss = scaler.scale(out.loss)`, then `loss.backward()`, `scaler.step(opt)`,
`scaler.update()`, and `loss` is what gets logged.

What went wrong and why: `scaler.scale(loss)` multiplies the loss by the current loss scale (65536 at start,
growing x2 every `growth_interval` steps without overflow). The gradients are unscaled again inside
`scaler.step`, so the optimisation itself is correct and the model learns, but the number the user reads is
the objective times the loss scale: ~2.6e5 at step 0 for a 32-way CLIP loss whose chance level is
ln(32) = 3.47, still ~6e4 after 100 steps when the objective is ~1.0. Training looks broken (a loss in the tens
of thousands, four orders of magnitude above chance) while the model learns. On the GPU this is the fp16
`autocast` + `GradScaler` recipe; on CPU the scaler multiplies the loss the same way.

The threads: mosaicml/composer#130 ("Fix loss reporting": the total loss was accumulated after the call to
`scaler.scale()`, so the reported loss was the scaled one; the fix adds to `total_loss` before scaling),
meta-pytorch/tnt#354 ("Return unscaled loss in AutoUnit": with fp16 and a grad scaler the unit returned, and
therefore logged, the scaled loss).

The fix (fixed=True): log the loss before scaling (`out.loss`), backpropagate `scaler.scale(out.loss)`.

Validation (validate.py, 100 steps, B = 32, logged `clip` / ln(32)): fault 19174 / 20518 / 15178 (seeds 0/1/2;
the logged loss is the objective x 65536: 66453 / 71110 / 52604 for objectives ~1.0 / 1.1 / 0.8), fixed
0.293 / 0.313 / 0.232.

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch
from common import image_caption_pairs, tiny_clip
from torch.utils.data import DataLoader, TensorDataset

THREADS = ("mosaicml/composer#130", "meta-pytorch/tnt#354")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(2048, seed=seed)
    loader = DataLoader(TensorDataset(pixels, ids), batch_size=B, shuffle=True, drop_last=True)
    model = tiny_clip(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scaler = torch.amp.GradScaler("cpu")

    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        for px, tok in loader:
            if step >= steps:
                break
            out = model(input_ids=tok, pixel_values=px, return_loss=True)
            if fixed:
                loss = out.loss.detach()  # what gets logged: the objective itself
                scaler.scale(out.loss).backward()
            else:
                loss = scaler.scale(out.loss)  # the scaled loss is both backpropagated and logged
                loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds,
                                                                     "text": out.text_embeds},
                            logits=out.logits_per_image, batch_size=B, inputs=px)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            step += 1
    session.close()
