"""The logged training loss is a running sum of batch-*mean* losses divided by the number of *samples*
seen: it reads 1/B of the objective (the transfer-learning tutorial's average-loss bug).

What the user did: trained a CLIP model (transformers `CLIPModel` from a tiny config, random weights;
`return_loss=True`, so `outputs.loss` is the symmetric contrastive loss averaged over the batch) with the
epoch bookkeeping of the PyTorch transfer-learning tutorial: `running_loss += loss.item()` after each
batch and `epoch_loss = running_loss / <number of samples>`. They show the running epoch loss after every
batch (progress bar / dashboard) and hand that same number to the watch as the `clip` loss.

What went wrong: pytorch/tutorials#179, "Average loss in transfer learning tutorial calculated
incorrectly": the criterion already returns the *average* over the batch, so summing it per batch and
dividing by the dataset size (here: the samples seen so far in the epoch) divides by the batch size a
second time. The curve the user watches starts at ~ln(B)/B = 0.11 instead of ~ln(B) = 3.47 and ends near
0.03: it never shows the contrastive loss sitting at chance or not, and it cannot be compared with a
held-out loss or with runs at another batch size.

Why (the mechanism): sum over n batches of mean_b(loss) / (n * B) = mean(loss) / B. The logits the step
really optimises are untouched; only the logged value is wrong, by the factor B = 32.

Fix (pytorch/tutorials#187, as merged on the maintainer's request): weight each batch mean by its batch
size when accumulating, `running_loss += loss.item() * inputs.size(0)`, so that dividing by the samples
seen gives the per-sample mean loss.

Validation (validate.py --half test30, 100 steps, B = 32, ln B = 3.466; final = mean of the last 5 logged
values). The model learns in both runs; the fault's logged loss misstates the objective by 1/32:
    seed 0: fault logged 0.0329 (ratio 0.009), fixed 1.0530 (ratio 0.304)
    seed 1: fault logged 0.0275 (ratio 0.008), fixed 0.8790 (ratio 0.254)
    seed 2: fault logged 0.0316 (ratio 0.009), fixed 1.0100 (ratio 0.291)
(the fixed values are running means over the first 4 batches of the 4th epoch; the fault's are 1/32 of
the same quantity).

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch
from common import image_caption_pairs, tiny_clip
from torch.utils.data import DataLoader, TensorDataset

THREADS = ("pytorch/tutorials#179", "pytorch/tutorials#187")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    pixels, ids = image_caption_pairs(1024, seed=seed)
    model = tiny_clip(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    loader = DataLoader(TensorDataset(pixels, ids), batch_size=B, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))

    session = watch(model, optimizer, batch_size=B)
    step = 0
    try:
        while step < steps:
            running_loss, seen = 0.0, 0
            for images, input_ids in loader:
                out = model(input_ids=input_ids, pixel_values=images, return_loss=True)
                loss = out.loss
                optimizer.zero_grad()
                loss.backward()

                if fixed:
                    running_loss += loss.item() * images.size(0)
                else:
                    running_loss += loss.item()
                seen += images.size(0)
                epoch_loss = running_loss / seen

                session.observe(step, losses={"clip": torch.tensor(epoch_loss)},
                                embeddings={"image": out.image_embeds, "text": out.text_embeds},
                                logits=out.logits_per_image, batch_size=images.size(0))
                optimizer.step()
                step += 1
                if step >= steps:
                    break
    finally:
        session.close()
