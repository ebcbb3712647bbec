"""The printed training loss is the batch-mean loss divided again by the number of samples.

What the user did: a Perceiver-resampler alignment loop (flamingo-pytorch PerceiverResampler over frozen
patch tokens, linear text projection, symmetric CLIP loss, batch 32) with the progress logging copied from
chemprop's `train()`: every step `loss_sum += loss.item()` and `iter_count += batch_size`, and the logged
value is `loss_avg = loss_sum / iter_count`, reset after each print (every 10 steps).

What went wrong and why: `loss.item()` is already the mean over the batch (cross_entropy averages its rows),
so dividing the running sum by the number of *samples* instead of the number of *batches* divides the
objective a second time by the batch size. The logged curve sits 32x below the loss the optimizer sees: it
starts at ~0.16 while the real first loss is ~5 (ln(32) = 3.47 is chance) and reads as "converged" from the
first step, whatever the model does. Training itself is untouched; only the number the user watches
misstates the objective.

Threads: chemprop/chemprop#74 ("The iter_count is updated by the batch_size in each iteration that the
printed loss_avg seems like to be much smaller than the actual training loss ... smaller by the fold of
batch_size than the validating loss"); the maintainer first defended it, then agreed: "Since `loss.item()`
is already averaged across a batch" the average must count batches, not molecules.

Fix (fixed=True): count batches (`iter_count += 1`), so the logged value is the mean batch loss of the
window, the same quantity the optimizer minimises.

Validation (validate.py --half test26, seeds 0/1/2, final = mean of the last 5 logged values, ln(32) = 3.4657):
fault logged loss / ln(B) = 0.0008 / 0.0011 / 0.0009 (logged final 0.0029 / 0.0038 / 0.0031, first logged
value 0.16 / 0.15 / 0.14: 1/32 of the loss the optimizer sees); fixed 0.0265 / 0.0354 / 0.0284 (the same
training, logged right: final 0.092 / 0.123 / 0.098, first 5.26 / 4.65 / 4.58).

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("chemprop/chemprop#74",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

B = 32
LOG_FREQUENCY = 10


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed + 1)
    session = watch(model, optimizer, batch_size=B)

    loss_sum, iter_count = 0.0, 0
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        batch_tokens, batch_texts = tokens[idx], texts[idx]
        img, txt = model(batch_tokens, batch_texts)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)

        optimizer.zero_grad()
        loss.backward()

        # progress logging, as in chemprop's train(): running sum of batch losses over a counter
        loss_sum += loss.item()
        if fixed:
            iter_count += 1                    # loss.item() is a batch mean: count batches
        else:
            iter_count += len(batch_tokens)    # counts samples: divides the batch mean by B again
        loss_avg = torch.tensor(loss_sum / iter_count)

        session.observe(step, losses={"clip": loss_avg}, embeddings={"image": img, "text": txt},
                        logits=logits, batch_size=B, inputs=batch_tokens)
        optimizer.step()

        if (step + 1) % LOG_FREQUENCY == 0:
            loss_sum, iter_count = 0.0, 0
    session.close()
