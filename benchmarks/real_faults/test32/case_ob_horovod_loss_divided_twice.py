"""Horovod data-parallel alignment run whose logged loss is divided by the number of workers a second time.

What the user did: a frozen-backbone alignment model (patch tokens -> flamingo-pytorch PerceiverResampler ->
projection; pooled text features -> projection; CLIP loss over each worker's local batch) trained on 4 Horovod
workers: parameters broadcast from rank 0, `hvd.DistributedOptimizer` averaging the gradients, a
DistributedSampler giving each worker its shard of the global batch. For the progress meter the script follows
a popular multi-GPU template: `reduced_loss = reduce_mean(loss, world_size)` with
`rt = hvd.allreduce(loss); rt /= world_size`, and rank 0 logs `reduced_loss`. The workers run here one after
another in one process; `hvd.allreduce` is the mean over workers (Horovod's default op is Average).

What went wrong and why: `hvd.allreduce` already averages over the workers, so dividing by `world_size` again
logs (mean loss) / 4. Training itself is untouched (the backward pass uses each worker's own loss and Horovod
averages the gradients), but every logged number is a quarter of the objective: the logged loss starts at
1.2-1.7 while the objective is 4.6-6.8 (chance ln(32) = 3.47), so it reads "below chance" from step 0, and the
final value understates the real loss by 4x: the curve cannot be compared with a single-GPU run, the
validation loss or ln(B).

The threads: tczhangzhi/pytorch-distributed#14 ("No need to divide with nprocs again": in the template's
`horovod_distributed.py`, `reduce_mean` divides by nprocs after `hvd.allreduce`, which computes the average by
default; the author acknowledged the mistake), horovod/horovod#843 (the maintainers: `hvd.allreduce` and the
DistributedOptimizer average by default, `average=False` / `op=hvd.Sum` sums).

The fix (fixed=True): log `hvd.allreduce(loss)` as it is (the mean over workers), without the extra division.

Validation (validate.py, 100 steps, 4 workers x 32 rows, logged `clip` / ln(32) on rank 0): fault 0.0054 /
0.0040 / 0.0043 (seeds 0/1/2; the logged loss is the objective / 4: 0.019 vs 0.075 at the end, 1.69 vs 6.76
at step 0 on seed 0), fixed 0.0217 / 0.0161 / 0.0171.

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch
from common import ResamplerAligner, clip_loss, token_pairs
from torch.utils.data import DataLoader, TensorDataset

THREADS = ("tczhangzhi/pytorch-distributed#14", "horovod/horovod#843")
CAUSE = "logging_misstates_loss"
FAMILY = "distributed"

WORLD = 4  # hvd.size()
LOCAL_B = 32  # per-worker batch; the global batch is 128


def hvd_allreduce(per_worker: list[torch.Tensor]) -> torch.Tensor:
    """What `hvd.allreduce(tensor)` returns on every worker: the average over workers (op=Average)."""
    return torch.stack([t.detach() for t in per_worker]).mean(0)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed=seed)
    loader = DataLoader(TensorDataset(tokens, texts), batch_size=WORLD * LOCAL_B, shuffle=True, drop_last=True)
    model = ResamplerAligner()  # identical on every worker after hvd.broadcast_parameters
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    session = watch(model, optimizer, batch_size=LOCAL_B)
    step = 0
    while step < steps:
        for tok, txt in loader:
            if step >= steps:
                break
            optimizer.zero_grad()
            losses, rank0 = [], None
            for rank in range(WORLD):
                shard = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)  # this worker's DistributedSampler rows
                img_emb, txt_emb = model(tok[shard], txt[shard])
                logits = model.logit_scale.exp() * img_emb @ txt_emb.t()
                loss = clip_loss(logits)
                # each worker backpropagates its own loss; DistributedOptimizer averages the gradients
                (loss / WORLD).backward()
                losses.append(loss)
                if rank == 0:
                    rank0 = (img_emb, txt_emb, logits, tok[shard])
            # reduce_mean(loss, world_size) from the template, for the progress meter on rank 0
            reduced_loss = hvd_allreduce(losses)
            if not fixed:
                reduced_loss = reduced_loss / WORLD
            img_emb, txt_emb, logits, inputs = rank0
            session.observe(step, losses={"clip": reduced_loss}, embeddings={"image": img_emb, "text": txt_emb},
                            logits=logits, batch_size=LOCAL_B, inputs=inputs)
            optimizer.step()
            step += 1
    session.close()
