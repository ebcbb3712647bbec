"""A 4-GPU CLIP-style loss built on `torch.distributed.all_gather`: the gathered features carry no autograd
history, so nothing but the logit scale receives a gradient and the loss sits at ln(global batch).

What the user did: trained a vision->text aligner (flamingo-pytorch PerceiverResampler over frozen patch tokens,
a projection, a linear text head, a learnable logit scale) under DDP on 4 ranks with a local batch of 16, and
wanted the CLIP loss over the global batch of 64, as the CLIP paper does. Each rank encodes its shard,
gathers the image and text embeddings of every rank with `torch.distributed.all_gather(list, tensor)`,
concatenates them and computes the symmetric InfoNCE loss on the 64 x 64 logits.

What went wrong and why: `torch.distributed.all_gather` writes copies of the tensors into the output list; the
copies have no `grad_fn`, so the concatenated embeddings are leaves that do not require grad. The only
tensor in the loss that requires grad is the logit scale, so `loss.backward()` raises no error: the
resampler, the projection and the text head get `.grad is None` ("image_encoder.weight.grad matches the
non-distributed version, text_encoder.weight.grad is None" in the forum thread: the tower whose features
only reach the loss through `all_gather` gets nothing). AdamW skips parameters without gradients, the
embeddings never change, and the only thing the optimizer can move is the logit scale (slowly, one lr-sized
step per update): the loss stays at or above ln(64) for the whole run.

Threads: discuss.pytorch.org/t/distributed-infonce-loss-clip/112477 ("Distributed InfoNCE Loss (CLIP)": a
gathered tower's `.grad` is None after `dist.all_gather`), and the thread its answers point to,
discuss.pytorch.org/t/dist-all-gather-and-gradient-preservation-in-multi-gpu-training/120696 (the two fixes:
an autograd-aware gather, or overwrite the local rank's slot of the gathered list with the local tensor that
still has its `grad_fn`).

Fix (fixed=True): after `dist.all_gather`, put the local rank's own embeddings (with their history) back in
their slot, `gathered[rank] = local`, the open_clip / forum recipe; each rank then gets the gradient of the
global loss with respect to its own shard and DDP averages them.

The 4 ranks run in this one process: each rank's forward runs on its shard of the same replica (DDP keeps
the replicas identical), `all_gather` is emulated with exactly its semantics (detached copies of every
rank's tensor), and DDP's gradient all-reduce (mean over ranks) is the mean of the 4 ranks' losses before
one backward. What rank 0 would log is what is observed.

Validation (validate.py, 100 steps, final = mean of the last 5 losses, chance ln(64) = 4.1589):
    seed 0: fault 7.0729 (1.701 ln B), fixed 0.1186 (0.029 ln B)
    seed 1: fault 5.1773 (1.245 ln B), fixed 0.1085 (0.026 ln B)
    seed 2: fault 5.2215 (1.256 ln B), fixed 0.0976 (0.024 ln B)
(fault: the first logged loss is 7.52 / 5.05 / 5.25, so it never gets below chance.)

Ground truth: distributed_gradient_missing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from common import ResamplerAligner, token_pairs

THREADS = ("discuss.pytorch.org/t/distributed-infonce-loss-clip/112477",
           "discuss.pytorch.org/t/dist-all-gather-and-gradient-preservation-in-multi-gpu-training/120696")
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"

WORLD = 4     # torchrun --nproc-per-node 4
LOCAL_B = 16  # per-rank batch; the loss is over WORLD * LOCAL_B = 64 pairs


def all_gather(tensor_list, tensor_of_rank):
    """torch.distributed.all_gather(tensor_list, tensor) as every rank sees it: the list is filled with copies of
    each rank's tensor, copies that carry no autograd history. `tensor_of_rank[k]` is what rank k contributed."""
    for k, t in enumerate(tensor_of_rank):
        tensor_list[k].copy_(t.detach())


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed + 1)

    session = watch(model, optimizer, batch_size=LOCAL_B)
    for step in range(steps):
        idx = torch.randperm(len(tokens), generator=g)[:WORLD * LOCAL_B]
        shards = idx.view(WORLD, LOCAL_B)  # DistributedSampler: rank k reads shards[k]

        # each rank's forward on its own shard (same replica weights on every rank)
        img_local, txt_local = zip(*(model(tokens[s], texts[s]) for s in shards))

        losses, logits_rank0 = [], None
        for rank in range(WORLD):
            all_img = [torch.zeros_like(img_local[rank]) for _ in range(WORLD)]
            all_txt = [torch.zeros_like(txt_local[rank]) for _ in range(WORLD)]
            all_gather(all_img, img_local)
            all_gather(all_txt, txt_local)
            if fixed:  # the rank's own shard keeps its grad_fn
                all_img[rank] = img_local[rank]
                all_txt[rank] = txt_local[rank]
            img_g, txt_g = torch.cat(all_img), torch.cat(all_txt)

            logit_scale = model.logit_scale.exp()
            logits = logit_scale * img_g @ txt_g.t()
            labels = torch.arange(len(logits))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
            losses.append(loss)
            if rank == 0:
                logits_rank0 = logits

        loss_rank0 = losses[0]
        session.observe(step, losses={"clip": loss_rank0},
                        embeddings={"image": img_local[0], "text": txt_local[0]},
                        logits=logits_rank0, batch_size=LOCAL_B, candidates=WORLD * LOCAL_B,
                        inputs=tokens[shards[0]].mean(1), extras={"logit_scale": model.logit_scale.exp()})

        # DDP: backward on every rank, gradients averaged over ranks
        optimizer.zero_grad()
        torch.stack(losses).mean().backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
    session.close()
