"""The logged training loss is the sum of per-batch MEAN losses divided by the number of SAMPLES seen: it reads
B = 32 times too small, a model at chance looks solved.

What the user did: a perceiver-pytorch Perceiver image tower and an MLP text tower aligned with the symmetric
CLIP loss (mean over the batch, as `F.cross_entropy` returns it), batches of 32, AdamW. For the progress bar
and the run's loss curve they keep an epoch total and normalise it the way a per-sample loss is normalised:
`epoch_loss += loss.detach()`, `n_seen += len(batch)`, logged value `epoch_loss / n_seen` (in PathomicFusion
the epoch loss was divided by `len(train_loader.dataset)`; in svm-pytorch by the dataset size N).

What went wrong and why: `loss` is already the batch mean, so summing it over batches and dividing by the number
of samples divides by the batch size a second time. The logged curve is the epoch's mean loss / 32: it starts at
~0.15 when the real loss is ~4.7 (chance is ln(32) = 3.47) and ends near 0.003, a "converged" run whatever the
model does; the objective itself, and the training, are untouched. mahmoodlab/PathomicFusion#3 (merged): the accumulated
training loss was divided by `len(train_loader.dataset)` but "the returned loss from CoxLoss is already averaged
across each batch", so the correct divisor is `len(train_loader)`, the number of batches;
kazuto1011/svm-pytorch#4 reports the same printing bug (`sum_loss` over N/batchsize batches divided by N).

The fix (the PR's): divide the accumulated batch means by the number of batches of the epoch, so the logged value
is the epoch's mean loss (running over the batches seen so far).

Validation (validate.py reads the logged `clip` value; 100 steps, B = 32, chance ln(32) = 3.466; final / ln(32)):
  fault  seed 0: 0.0035 / 0.0010   seed 1: 0.0039 / 0.0011   seed 2: 0.0031 / 0.0009   (logged, first step
         0.147 / 0.157 / 0.146 while the real loss was 4.72 / 5.03 / 4.67: 32x too small. Training is the same in
         both runs, so the model learns; only the logged value misstates the objective)
  fixed  seed 0: 0.1105 / 0.0319   seed 1: 0.1241 / 0.0358   seed 2: 0.0995 / 0.0287

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("mahmoodlab/PathomicFusion#3", "kazuto1011/svm-pytorch#4")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

B = 32


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    dataset = torch.utils.data.TensorDataset(tokens, texts)
    loader = torch.utils.data.DataLoader(dataset, batch_size=B, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        epoch_loss, n_seen, n_batches = torch.zeros(()), 0, 0
        for tok, txt in loader:
            if step >= steps:
                break
            img_emb, txt_emb = model(tok, txt)
            logits = model.logit_scale.exp() * img_emb @ txt_emb.t()
            loss = clip_loss(logits)  # mean over the batch
            optimizer.zero_grad()
            loss.backward()
            epoch_loss = epoch_loss + loss.detach()
            n_seen += len(tok)
            n_batches += 1
            train_loss = epoch_loss / n_batches if fixed else epoch_loss / n_seen  # the logged training loss
            session.observe(step, losses={"clip": train_loss}, embeddings={"image": img_emb, "text": txt_emb},
                            logits=logits, batch_size=len(tok))
            optimizer.step()
            step += 1
    session.close()
