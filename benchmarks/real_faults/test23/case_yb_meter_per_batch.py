"""The logged training loss is a per-sample sum divided by the number of batches: it reads batch-size
times the loss the model is trained on.

What the user did: trained a Perceiver (perceiver-pytorch) image encoder against a text MLP with a CLIP
loss, 32 pairs per batch, and logged the running epoch loss the way the pytorch-template they started
from does: `metrics['train_loss'] += loss.item() * x.size(0)` each step (a per-sample sum, since the
loss is a batch mean). Their logger reports, every step, that sum divided by the number of steps
of the epoch so far, not by the number of samples seen.

What went wrong and why: the optimised objective is the batch-mean CLIP loss; the logged number is that
loss times x.size(0) = 32 (a running epoch mean of it). The run learns well (the loss it is trained
on falls from ln 32 = 3.47 to ~0.1 within 100 steps), but the curve the user watches starts at ~150
and flattens at ~3.5, right at ln(32): it looks exactly like a contrastive run stuck at chance, and a
working model gets debugged. The template's maintainer confirmed the mismatch between the per-sample
scaled training loss and the evaluation loss and changed the logging (itaigat/pytorch-template#2:
"You are correct, fixed it. ... it's only for logging and does not related to the training procedure").
The same family of slip (a logged average with the wrong denominator) in zsyOAOA/ResShift#25 ("the
average loss will be additionally divided by len(loss)"; maintainer: no influence on the training).

Fix: keep one normalisation: count samples when the sum is per sample (`seen += x.size(0)`), so the
logged value is the mean loss per pair the model is trained on.

Validation (validate.py, 100 steps, final logged loss / ln(32), seeds 0/1/2):
fault 1.0206 / 1.1456 / 0.9189 (logged 3.54 / 3.97 / 3.18: 32x the trained running mean, the same
model trajectory as the fixed run); fixed 0.0319 / 0.0358 / 0.0287 (logged 0.111 / 0.124 / 0.100).

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("itaigat/pytorch-template#2", "zsyOAOA/ResShift#25")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = PerceiverAligner()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    session = watch(model, optimizer, batch_size=B)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=B,
                                         shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    step = 0
    while step < steps:
        metrics = {"train_loss": 0.0, "seen": 0}                       # zeroed each epoch
        for x, t in loader:
            if step >= steps:
                break
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            metrics["train_loss"] += loss.item() * x.size(0)
            metrics["seen"] += x.size(0) if fixed else 1                 # template: per-sample sum / batches
            logged = torch.tensor(metrics["train_loss"] / metrics["seen"])
            session.observe(step, losses={"clip": logged}, embeddings={"image": img, "text": txt},
                            logits=logits, batch_size=B, inputs=x,
                            extras={"logit_scale": model.logit_scale.exp()})
            optimizer.step()
            step += 1
    session.close()
