"""The loss the user logs is the running mean since the start of the epoch, not the loss of the step.

What the user did: a tiny transformers CLIPModel (random weights) is trained on image-caption pairs with the
symmetric CLIP loss (AdamW, lr 1e-3, batch 32, one pass over 3200 pairs = 100 steps). Following the trainer
they came from, the training loop keeps `epoch_loss += loss.item()` and reports `epoch_loss / batches_seen`
as "the loss" at every step (progress bar, TensorBoard, and the `losses` handed to the watch).

What went wrong and why: that number is a cumulative average with infinite history over the epoch. The first
steps sit at ln(B) and keep weighing on it: after 100 steps it still reads ~0.6 ln(B) while the loss of the
current batch (what the logits actually give) is already ~0.3 ln(B), and it only drops back at the next epoch
boundary (a saw-tooth). The curve looks like a model stuck far above its real loss. AllenNLP's report
(allenai/allennlp#1706): a bidaf training curve that stays flat or rises within each epoch and drops at epoch
ends; the reporter: "the loss is averaged over batches"; the maintainer: "If you look at the average loss at
the end of each epoch, you see a steadily decreasing curve"; the follow-up: "Taking the running average with
infinite history per epoch produces this weird stepped signal ... which badly overestimates the loss in early
training".

Fix (fixed=True): report the step's own loss (`loss.item()`), and keep the epoch mean only as an end-of-epoch
summary.

Validation (validate.py, 100 steps, B=32, ln(B)=3.466), the logged loss / ln(B) at the end:
  fault (logged running mean): seed 0 0.6587, seed 1 0.6299, seed 2 0.5712 (logged 2.283, 2.183, 1.980)
  fixed (logged step loss):    seed 0 0.3007, seed 1 0.3700, seed 2 0.2576 (logged 1.042, 1.282, 0.893)
The training itself is identical in both runs (same seeds, same updates); only the logged number differs.

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("allenai/allennlp#1706",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

B = 32
N = 3200  # 100 batches per epoch


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pixels, ids = image_caption_pairs(N, seed=seed)
    model = tiny_clip(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        order = torch.randperm(N, generator=g)
        epoch_loss, batches_seen = 0.0, 0
        for start in range(0, N - B + 1, B):
            idx = order[start:start + B]
            img = F.normalize(model.get_image_features(pixel_values=pixels[idx]).pooler_output, dim=-1)
            txt = F.normalize(model.get_text_features(input_ids=ids[idx]).pooler_output, dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            epoch_loss += loss.item()
            batches_seen += 1
            train_loss = loss.item() if fixed else epoch_loss / batches_seen  # what the progress bar shows
            session.observe(step, losses={"clip": torch.tensor(train_loss)},
                            embeddings={"image": img, "text": txt}, logits=logits)
            optimizer.step()
            step += 1
            if step >= steps:
                break
    session.close()
