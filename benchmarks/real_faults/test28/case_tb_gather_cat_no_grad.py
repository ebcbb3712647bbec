"""Distributed CLIP-style alignment (flamingo-pytorch resampler over frozen patch tokens, linear text head) on 2
DDP ranks, 32 pairs per rank: to score every row against all 64 pairs of the global batch, the user gathers the
image and text features of all ranks with `torch.distributed.all_gather` and builds the logits from
`torch.cat(gathered)`, the same 64 x 64 loss on every rank (the ranks are simulated in this process: each runs the
shared model on its shard, `all_gather` returns copies without autograd history, DDP's gradient averaging is the
mean of the ranks' losses).

What goes wrong: `all_gather` fills pre-allocated buffers and does not propagate gradients, so every feature in
the concatenated tensors, this rank's own included, is cut from the graph. `loss.backward()` raises nothing
because the learnable logit scale still reaches the loss, but the resampler, both projections and the text head get
no gradient at all: the only parameter that moves is the temperature, and the loss stays at (above) ln(64) on every
step.

Threads: JohnGiorgi/DeCLUTR#9 (each DDP rank only sees N/n_gpus negatives; gather the embeddings across ranks) and
JohnGiorgi/DeCLUTR#44, the PR that enables it: "`all_gather` yields tensors with no gradients. Therefore, we
overwrite the embeddings gathered from the current replica with the local copy, which does have gradients."

Fix (fixed=True): after the gather, put this rank's own tensors back into the list
(`gathered[rank] = local`) before concatenating, so the local shard carries its gradient.

Validation (validate.py, seeds 0/1/2, 100 steps, 64 candidates, ln(64) = 4.159; final CLIP loss / ln(B)):
fault 4.425 / 4.408 / 5.545 (ratio 1.064 / 1.060 / 1.333); fixed 0.107 / 0.117 / 0.110 (ratio 0.026 / 0.028 /
0.026).

Ground truth: distributed_gradient_missing.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("JohnGiorgi/DeCLUTR#44", "JohnGiorgi/DeCLUTR#9")
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"

WORLD = 2  # DDP ranks, simulated in this process: one shard of the global batch each
LOCAL_B = 32  # per-rank batch; each rank scores against WORLD * LOCAL_B candidates after the gather


def all_gather(tensor_per_rank: list[torch.Tensor]) -> list[torch.Tensor]:
    """What `torch.distributed.all_gather(out_list, t)` leaves in `out_list` on every rank: a copy of each
    rank's tensor, written into pre-allocated buffers, with no autograd history."""
    out = [torch.empty_like(t) for t in tensor_per_rank]
    with torch.no_grad():
        for buf, t in zip(out, tensor_per_rank):
            buf.copy_(t)
    return out


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    session = watch(model, optimizer, batch_size=LOCAL_B)
    g = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        idx = torch.randperm(len(tokens), generator=g)[: WORLD * LOCAL_B]  # DistributedSampler: a slice per rank
        img_local, txt_local = [], []
        for rank in range(WORLD):  # every rank runs the same (DDP-synchronised) model on its own shard
            sl = idx[rank * LOCAL_B:(rank + 1) * LOCAL_B]
            img, txt = model(tokens[sl], texts[sl])
            img_local.append(img)
            txt_local.append(txt)

        rank_losses, rank_logits = [], []
        for rank in range(WORLD):
            gathered_img = all_gather(img_local)
            gathered_txt = all_gather(txt_local)
            if fixed:  # DeCLUTR#44: put this rank's own tensors (with their grad_fn) back into the gathered list
                gathered_img[rank] = img_local[rank]
                gathered_txt[rank] = txt_local[rank]
            all_img = torch.cat(gathered_img)
            all_txt = torch.cat(gathered_txt)
            logits = model.logit_scale.exp() * all_img @ all_txt.t()  # global (64 x 64) loss on every rank
            rank_losses.append(clip_loss(logits))
            rank_logits.append(logits)

        loss = torch.stack(rank_losses).mean()  # DDP averages the ranks' gradients
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": rank_losses[0]},
                        embeddings={"image": img_local[0], "text": txt_local[0]},
                        logits=rank_logits[0], batch_size=LOCAL_B, candidates=WORLD * LOCAL_B)
        optimizer.step()
    session.close()
