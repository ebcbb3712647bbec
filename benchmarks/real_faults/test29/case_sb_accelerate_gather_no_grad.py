"""Multi-GPU contrastive alignment that gathers the embeddings with `accelerator.gather` and computes the
CLIP loss on the gathered copies only: no gradient reaches either tower, the loss stays at chance.

What the user did: a frozen-backbone style aligner (patch tokens -> flamingo-pytorch PerceiverResampler ->
projection; text features -> projection; learnable logit scale) trained data-parallel on 4 processes with a
per-process batch of 16. To contrast every image against the whole global batch of 64, each process gathers
the image and text embeddings of all processes (`accelerator.gather`, i.e. an all_gather into a fresh buffer)
and computes the symmetric InfoNCE loss on the gathered 64 x 64 logits, exactly as the single-GPU script did
on its own batch. The 4 processes are simulated here in one process: every "rank" embeds its own shard with
the same weights (DDP replicas), `gather` hands every rank the concatenation of all shards as received over
the wire (no autograd history), and the mean of the ranks' losses is back-propagated (what DDP's gradient
averaging amounts to).

What went wrong and why: an all_gather writes into new tensors; they carry no `grad_fn`, so the gathered
embeddings are constants for autograd. The only trainable tensor left in the loss is the logit scale, so
`backward()` does not raise (the loss still requires grad), but every gradient of the resampler, the
projections and the text head is zero. The loss is the same on every process (they all score the same
gathered matrix) and it never moves from ln(64): the thread's observation verbatim ("When accelerate.gather
is used, then the loss is the same across all GPUs, and the gradients are all zero").

Threads: dopplerchase/cira-diff#1 (a `.gather()` in the loss path of an accelerate training loop: loss
identical on all GPUs and all gradients zero on multi-GPU machines; fixed by removing the gather from the
loss path); MUGE-2021/image-retrieval-baseline#12 (the same question for a CLIP-style image-text retrieval
loss: why not compute the loss directly on `gathered_image_features` / `gathered_text_features` instead of
re-inserting the local features; the local tensors are the only ones with a graph).

Fix (fixed=True): keep gathering for the negatives, but put each rank's own, differentiable embeddings back
into its slot of the gathered matrix before computing the logits (the open_clip / MUGE baseline pattern), so
every rank back-propagates through its local shard and the gradient average covers all 64 rows.

Validation (validate.py --half test29, seeds 0/1/2, 100 steps, global batch 64, ln(64) = 4.1589):
    fault: final loss 7.0783 / 5.1578 / 5.2876 -> ratio 1.702 / 1.240 / 1.271 (never learns)
    fixed: final loss 0.1299 / 0.1097 / 0.1076 -> ratio 0.031 / 0.026 / 0.026

Ground truth: distributed_gradient_missing.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("dopplerchase/cira-diff#1", "MUGE-2021/image-retrieval-baseline#12")
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"

WORLD = 4  # data-parallel processes (simulated)
LOCAL_B = 16  # per-process batch
B = WORLD * LOCAL_B  # global batch: the candidates every row is scored against


def gather(local_tensors: list[torch.Tensor]) -> torch.Tensor:
    """What `accelerator.gather(x)` returns on every process: all processes' `x`, concatenated along dim 0,
    received through an all_gather into new buffers (so without autograd history)."""
    return torch.cat([t.detach().clone() for t in local_tensors])


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    tokens, texts = token_pairs(4096, seed)
    torch.manual_seed(seed)
    model = ResamplerAligner()  # every rank builds the same replica (DDP broadcasts rank 0's weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sampler = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    order, pos = torch.randperm(len(tokens), generator=sampler), 0
    for step in range(steps):
        if pos + B > len(order):  # new epoch of the distributed sampler
            order, pos = torch.randperm(len(tokens), generator=sampler), 0
        idx = order[pos:pos + B]
        pos += B
        shards = [idx[r * LOCAL_B:(r + 1) * LOCAL_B] for r in range(WORLD)]

        # each process embeds its own shard
        local = [model(tokens[s], texts[s]) for s in shards]
        # ... and gathers everybody's embeddings to contrast against the global batch
        all_image = gather([img for img, _ in local])
        all_text = gather([txt for _, txt in local])

        rank_losses, rank0 = [], None
        for rank in range(WORLD):
            image_features, text_features = all_image, all_text
            if fixed:  # this rank's own rows keep their graph
                lo, hi = rank * LOCAL_B, (rank + 1) * LOCAL_B
                image_features = torch.cat([all_image[:lo], local[rank][0], all_image[hi:]])
                text_features = torch.cat([all_text[:lo], local[rank][1], all_text[hi:]])
            logits = model.logit_scale.exp() * image_features @ text_features.t()
            rank_losses.append(clip_loss(logits))
            if rank == 0:
                rank0 = (image_features, text_features, logits)
        loss = torch.stack(rank_losses).mean()  # DDP averages the ranks' gradients
        loss.backward()

        image_features, text_features, logits = rank0
        session.observe(step, losses={"clip": rank_losses[0]},
                        embeddings={"image": image_features, "text": text_features}, logits=logits,
                        batch_size=B, candidates=B)
        optimizer.step()
        optimizer.zero_grad()
    session.close()
