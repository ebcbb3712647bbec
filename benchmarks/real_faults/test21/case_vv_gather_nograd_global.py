"""Contrastive loss over features gathered with `torch.distributed.all_gather`: no gradient reaches either tower.

What the user did: a resampler aligner (flamingo-pytorch PerceiverResampler over frozen patch tokens, a text
projection, CLIP loss) trained data-parallel on 2 ranks. To score every image against the captions of both ranks
they gathered the image and the text features of all ranks with the plain collective (`dist.all_gather` into
`zeros_like` buffers, as in accelerate's `gather`), concatenated them and computed the global symmetric loss on the
concatenation on every rank, then `backward()`.

What went wrong and why: `torch.distributed.all_gather` (and `accelerator.gather`) copies tensors into the output
buffers without autograd history, so the concatenated features are leaves that require no grad; the only tensor of
the loss's graph that requires grad is the logit scale. The backward runs without error (the scale carries it) and
DDP averages gradients that are zero for every tower weight: the model never moves, the loss sits at ln(global
batch). The rank's own shard is not put back into the gathered list, so not even the local terms carry a gradient.
In this single-process script the 2 ranks are run one after another on their shards of the global batch and the
collective is written out as what it returns (detached copies of every rank's features); the per-rank losses are
averaged as DDP averages their gradients.

Threads: huggingface/accelerate#76 ("the gather method does not propagate the history of the tensors (necessary
for the backward pass), so this won't work if you need gradients"; the user's accuracy dropped to nothing) and
pytorch/pytorch#25284 (all_gather outputs lose their grad_fn; the answer is a differentiable gather).

Fix (fixed=True): put the rank's own features back in its slot of the gathered list (open_clip's ClipLoss without
gather_with_grad), so each rank's loss has a gradient through its own shard and DDP's average gives the towers their
gradient.

Validation (validate.py --half test21, 100 steps, global batch 32 = 2 ranks x 16, candidates 32, ln(32) = 3.466),
final loss / ln(32):
  seed 0: fault 4.9700 (1.434), fixed 0.0837 (0.024)
  seed 1: fault 4.7149 (1.360), fixed 0.0958 (0.028)
  seed 2: fault 4.8491 (1.399), fixed 0.0890 (0.026)
The fault ends above ln(32): no tower weight moves, so the random initial embeddings keep scoring at the initial
scale (1/0.07), worse than uniform; only the logit scale drifts.

Ground truth: distributed_gradient_missing.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/accelerate#76", "pytorch/pytorch#25284")
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"

WORLD = 2
LOCAL_B = 16


def _all_gather(per_rank: list[torch.Tensor]) -> list[torch.Tensor]:
    """What `dist.all_gather(out, t)` leaves in `out` on every rank: copies of each rank's tensor, no autograd."""
    out = [torch.zeros_like(t) for t in per_rank]
    for buf, t in zip(out, per_rank):
        buf.copy_(t.detach())
    return out


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    global_b = WORLD * LOCAL_B
    session = watch(model, optimizer, batch_size=LOCAL_B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (global_b,), generator=g)
        shards = idx.view(WORLD, LOCAL_B)
        feats = [model(tokens[s], texts[s]) for s in shards]          # each rank's forward on its shard
        imgs, txts = [f[0] for f in feats], [f[1] for f in feats]
        losses = []
        for rank in range(WORLD):
            all_img, all_txt = _all_gather(imgs), _all_gather(txts)
            if fixed:  # the local shard keeps its graph
                all_img[rank], all_txt[rank] = imgs[rank], txts[rank]
            all_img, all_txt = torch.cat(all_img), torch.cat(all_txt)
            logits = model.logit_scale.exp() * all_img @ all_txt.t()
            losses.append(clip_loss(logits))
            if rank == 0:
                rank0 = (logits, all_img, all_txt)
        loss = torch.stack(losses).mean()                            # DDP: gradients averaged over ranks
        optimizer.zero_grad()
        loss.backward()
        logits0, img0, txt0 = rank0
        session.observe(step, losses={"clip": losses[0]}, embeddings={"image": img0, "text": txt0},
                        logits=logits0, batch_size=LOCAL_B, candidates=global_b, inputs=tokens[shards[0]])
        optimizer.step()
    session.close()
