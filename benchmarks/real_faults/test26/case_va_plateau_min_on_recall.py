"""ReduceLROnPlateau left in its default mode='min' while stepped on a held-out recall: the LR is cut
every few epochs *because* the model improves.

What the user did: a small image-text alignment run (transformers `CLIPModel` from a tiny config, both towers
trained, the model's own contrastive loss) over 320 training pairs, batch 64 (5 steps an epoch), AdamW at
5e-4. After every epoch they measure held-out image->text R@1 on 256 pairs and call
`scheduler.step(val_r1)` on a `ReduceLROnPlateau(optimizer, factor=0.1, patience=2)`, keeping the scheduler's
defaults otherwise.

What went wrong and why: `mode` defaults to 'min': the scheduler treats the monitored value as something to
minimise and counts an epoch as "bad" whenever it is not below the best (lowest) value seen. A recall that
rises (or stays put) is exactly that, so after the first patience window the LR is multiplied by 0.1 every
third epoch: 5e-4 for the first 20 steps, then 5e-5, 5e-6 from step 35, 5e-7 from step 50, down to 5e-9
from step 80 (seed 0). The model has had ~20 useful steps; the CLIP loss ends far above where the same run
ends with the scheduler in the right mode.

Thread: md-mohaiminul/ViS4mer#4 ("ReduceLROnPlateau by default assumes a 'min' metric ... it is used for the
accuracy metric but the mode is not changed": the maintainer agrees it was not intended and suggests
mode='max').

Fix (fixed=True): `ReduceLROnPlateau(..., mode="max")` for a recall, so the LR is only cut when the recall
stops rising.

Validation (validate.py, B=64, ln(B)=4.1589, 100 steps, final loss / ln(B) on seeds 0, 1, 2):
fault 0.9352 / 0.7660 / 0.8007; fixed 0.1272 / 0.1281 / 0.1151.

Ground truth: lr_schedule.
"""

from __future__ import annotations

import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("md-mohaiminul/ViS4mer#4",)
CAUSE = "lr_schedule"
FAMILY = "schedules"

B = 64
N_TRAIN = 320
N_VAL = 256
LR = 5e-4


@torch.no_grad()
def recall_at_1(model, pixels, input_ids):
    model.eval()
    out = model(input_ids=input_ids, pixel_values=pixels)
    model.train()
    hits = (out.logits_per_image.argmax(dim=1) == torch.arange(len(pixels))).float()
    return hits.mean().item(), out.image_embeds, out.text_embeds


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pixels, input_ids = image_caption_pairs(N_TRAIN + N_VAL, seed=seed)
    train_px, train_ids = pixels[:N_TRAIN], input_ids[:N_TRAIN]
    val_px, val_ids = pixels[N_TRAIN:], input_ids[N_TRAIN:]

    model = tiny_clip(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    if fixed:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=2)
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=2)

    gen = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        order = torch.randperm(N_TRAIN, generator=gen)
        for start in range(0, N_TRAIN - B + 1, B):
            if step >= steps:
                break
            idx = order[start:start + B]
            out = model(input_ids=train_ids[idx], pixel_values=train_px[idx], return_loss=True)
            loss = out.loss
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=out.logits_per_image, batch_size=B, inputs=train_px[idx])
            optimizer.step()
            step += 1
        val_r1, val_img, val_txt = recall_at_1(model, val_px, val_ids)
        scheduler.step(val_r1)
    session.evaluate_retrieval(val_img, val_txt)
    session.close()
