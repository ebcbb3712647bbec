"""Distributed CLIP loss whose features are gathered with the plain `torch.distributed.all_gather`: the
gathered copies carry no autograd history, so no gradient reaches the encoders.

What the user did: a flamingo-pytorch PerceiverResampler aligner (frozen-backbone patch tokens -> resampler ->
projection; text features -> projection) trained with a CLIP loss written for DDP. To get more negatives the
loop gathers the image and text embeddings of every rank with `dist.all_gather(list, tensor)`,
`torch.cat`s the lists and computes the symmetric InfoNCE over the gathered rows. The script is launched with
torchrun (here one rank, the gloo backend on CPU: the smoke test on one GPU that precedes the multi-node job).

What went wrong and why: `torch.distributed.all_gather` writes into pre-allocated tensors outside autograd; the
gathered list, the local rank's own slot included, has no `grad_fn`. The loss therefore depends on the model
only through `logit_scale`: the resampler and both projections get no gradient at all (their `.grad` stays
None). With the embeddings frozen at their random init, the logits at the initial scale 1/0.07 put the loss
above ln(B); Adam lowers the scale by about lr per step, so the loss drifts towards ln(B) and never below it:
the run never learns. The same holds on any number of ranks: with the plain collective neither the cross-rank
terms nor the local ones are differentiable unless the local slot is put back.

Threads: pytorch/ignite#2504 (a user wants to gather the per-rank predictions with `all_gather` and compute the
loss on the gathered tensor; the maintainer answers that computing predictions in DDP, gathering them and
back-propagating from the gathered result won't work), Lightning-AI/pytorch-lightning#6295 (the maintainers'
issue that the all_gather used on TPU "doesn't support backward gradients": "all_gather will now work, it
still doesn't support grad", i.e. gathered features lose their gradient, the same mechanism on another
backend).

The fix (fixed=True): put the local rank's own tensors back into its slot of the gathered list before the
`torch.cat` (the open_clip / JohnGiorgi recipe; `torch.distributed.nn.all_gather` does the same and also
returns the cross-rank terms), so the loss is differentiable in the local embeddings.

Validation (validate.py --half test33, seeds 0/1/2, 100 steps, B = 32 on one rank, candidates 32,
chance ln 32 = 3.466): fault final loss 3.685 / 3.733 / 4.762 (ratio 1.063 / 1.077 / 1.374: above chance
from step 0 to the end, only logit_scale moves); fixed 0.076 / 0.062 / 0.096 (ratio 0.022 / 0.018 / 0.028).

Ground truth: distributed_gradient_missing.
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.nn.functional as F

from common import ResamplerAligner, token_pairs

THREADS = ("pytorch/ignite#2504", "Lightning-AI/pytorch-lightning#6295")
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"

B = 32          # per-rank batch
LR = 1e-3


def gather_features(image_features, text_features, fixed):
    """Gather the embeddings of every rank so each row is scored against the global batch."""
    world, rank = dist.get_world_size(), dist.get_rank()
    all_img = [torch.zeros_like(image_features) for _ in range(world)]
    all_txt = [torch.zeros_like(text_features) for _ in range(world)]
    dist.all_gather(all_img, image_features)
    dist.all_gather(all_txt, text_features)
    if fixed:  # the local slot gets the tensors that carry the autograd history
        all_img[rank] = image_features
        all_txt[rank] = text_features
    return torch.cat(all_img), torch.cat(all_txt)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    created, store_path = False, None
    if not dist.is_initialized():  # what torchrun --nproc_per_node 1 sets up
        store = tempfile.NamedTemporaryFile(prefix="nb_gather_", delete=False)
        store.close()
        store_path = store.name
        os.remove(store_path)
        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=0, world_size=1)
        created = True
    try:
        torch.manual_seed(seed)
        tokens, texts = token_pairs(2048, seed)
        model = ResamplerAligner()
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        g = torch.Generator().manual_seed(seed + 1)
        session = watch(model, optimizer, batch_size=B)
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            all_img, all_txt = gather_features(img, txt, fixed)
            logits = model.logit_scale.exp() * all_img @ all_txt.t()
            labels = torch.arange(len(logits))  # global batch: row i pairs with column i
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                            logits=logits, candidates=len(all_txt), inputs=tokens[idx])
            optimizer.step()
        session.close()
    finally:
        if created:
            dist.destroy_process_group()
            if os.path.exists(store_path):
                os.remove(store_path)
