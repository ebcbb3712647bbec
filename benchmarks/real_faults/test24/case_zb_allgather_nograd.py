"""Distributed: the global CLIP loss is computed on features collected with a plain `all_gather`, whose
output carries no autograd history, so only the logit scale is ever trained.

What the user did: a flamingo-pytorch Perceiver-resampler aligner trained data-parallel on 2 ranks (32 pairs a
rank, 64 in the global batch). To score every image against all 64 captions they gathered the image and text
features of every rank the way the PyTorch docs show `all_gather` (a list of empty tensors filled in place),
concatenated the list and computed the symmetric InfoNCE over the (64, 64) logits on each rank; DDP averages the
ranks' gradients. Two ranks are simulated in one process here: one replica (DDP keeps them identical), the
per-rank losses averaged as DDP averages their gradients, and `all_gather` written as what
`torch.distributed.all_gather` leaves in its output list: copies of every rank's tensor with no `grad_fn`.

What went wrong and why: the gathered list holds only copies, including the slot of the rank's own shard, so the
loss has no path back to either encoder. `loss.backward()` does not complain, because the learnable logit scale
still multiplies the logits: it is the only parameter that gets a gradient. Every encoder weight keeps its
initial value, the pairs stay unmatched and the loss stays at or above ln(64) = 4.16 (the untrained unit
embeddings times the initial scale 1/0.07 score some wrong pairs high; the scale alone cannot fix that) (JohnGiorgi in the pytorch-metric-
learning thread: "gathered tensors have no gradients, so we overwrite the gathered embeddings tensor from the
current replica with the embeddings tensor produced on that replica, which has gradients"; the PyTorch forum
thread: `dist.all_gather()` "does not maintain the grad_fn property in the combined data").

Fix (fixed=True, the thread's): after the gather, put the rank's own features (the tensors with gradient) back
into their slot of the gathered list, then concatenate: each rank's loss reaches its own encoders' outputs, and
the DDP average of the ranks' gradients gives every row its full gradient.

Threads: KevinMusgrave/pytorch-metric-learning#10 (multi-GPU NT-Xent: gathered tensors have no gradients,
overwrite the local slot); discuss.pytorch.org/t/dist-all-gather-and-gradient-preservation-in-multi-gpu-
training/120696 (all_gather drops grad_fn; the two fixes: an autograd gather or the local-slot overwrite).

Validation (validate.py, seeds 0/1/2, 100 steps, 64 candidates, final loss / ln(64)):
  fault: 7.2175 / 5.1851 / 5.1736 -> ratio 1.735 / 1.247 / 1.244
  fixed: 0.1241 / 0.1118 / 0.0994 -> ratio 0.030 / 0.027 / 0.024

Ground truth: distributed_gradient_missing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import ResamplerAligner, token_pairs

THREADS = ("KevinMusgrave/pytorch-metric-learning#10",
           "discuss.pytorch.org/t/dist-all-gather-and-gradient-preservation-in-multi-gpu-training/120696")
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"

WORLD = 2  # ranks
B = 32  # pairs per rank; the global batch is WORLD * B


def all_gather(shards: list[torch.Tensor]) -> list[torch.Tensor]:
    """What `torch.distributed.all_gather(out, t)` leaves in `out` on every rank: a copy of each rank's tensor,
    without autograd history (the collective is not differentiable)."""
    return [s.detach().clone() for s in shards]


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed=seed)
    model = ResamplerAligner()  # the replica every rank holds (DDP broadcasts rank 0's weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    n = WORLD * B
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (n,), generator=g)  # DistributedSampler: B distinct pairs a rank
        tok_shards, txt_shards = tokens[idx].split(B), texts[idx].split(B)
        img_local, txt_local = [], []
        for r in range(WORLD):  # each rank's forward pass on its shard
            img, txt = model(tok_shards[r], txt_shards[r])
            img_local.append(img)
            txt_local.append(txt)

        scale = model.logit_scale.exp()
        labels = torch.arange(n)
        rank_losses, rank0_logits = [], None
        for rank in range(WORLD):
            all_img = all_gather(img_local)
            all_txt = all_gather(txt_local)
            if fixed:  # the gathered copies have no grad_fn: put this rank's own features back in their slot
                all_img[rank] = img_local[rank]
                all_txt[rank] = txt_local[rank]
            all_img, all_txt = torch.cat(all_img), torch.cat(all_txt)
            logits = scale * all_img @ all_txt.t()  # (64, 64): every image against every caption
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            rank_losses.append(loss)
            if rank == 0:
                rank0_logits = logits
        loss = torch.stack(rank_losses).mean()  # DDP: the ranks' gradients are averaged

        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img_local[0], "text": txt_local[0]},
                        logits=rank0_logits, batch_size=B, candidates=n, inputs=tok_shards[0])
        optimizer.step()
    session.close()
