"""Features all-gathered for a global contrastive loss; the gathered gradient is never scaled back up by the world size.

What the user did: moved a working single-GPU image-text alignment run (flamingo-pytorch PerceiverResampler
aligner, symmetric CLIP loss over a batch of 64, SGD with momentum at the learning rate tuned for that run) to 8
GPUs x 8 pairs with DDP. To keep 64 candidates per row, each rank all-gathers the image and text features with
the usual gather snippet (`dist.all_gather`, then its own shard put back so that it carries a gradient) and
computes the same global 64 x 64 CLIP loss. The ranks are simulated in one process here (DDP's gradient
averaging = the mean of the 8 ranks' losses, each reaching the model only through its own shard); rank 0 is
observed.

What went wrong and why: the loss value on every rank is the global loss, but each rank back-propagates it only
into its own 8 rows: the sum over ranks is the full gradient, and DDP then *averages* it, so every parameter
receives 1/8 of the single-GPU gradient. With SGD that is the learning rate silently divided by the world size:
after 100 steps the model has barely left chance, where the same script on one GPU learns. The maintainers'
explanation (ShiqiYu/OpenGait#36): with gathered features "only the embeddings inside current GPU can backward
gradients", so "the summation is still the 1/n of ideal result. This is why the pair-based loss should be scaled
by n in our implementation"; and the report of removing that scaling (deepinsight/insightface#1483): "When I
delete this line (`x_grad = x_grad * self.world_size`), the train loss is increased and the accuracy is
degraded."

Fix (fixed=True): scale each rank's loss by the world size before backward (OpenGait's `loss * world_size`),
which gives back exactly the single-GPU gradient of the global loss.

Validation (validate.py, 100 steps, 8 ranks x 8, candidates 64, ln 64 = 4.159): final loss / ln(64)
  fault: seed 0 1.0195, seed 1 0.9161, seed 2 0.7757 (final loss 4.240, 3.810, 3.226)
  fixed: seed 0 0.2590, seed 1 0.1184, seed 2 0.0586 (final loss 1.077, 0.493, 0.244)
(SGD, momentum 0.9, lr 2.2e-4.)

Ground truth: distributed_gradient_scale.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("ShiqiYu/OpenGait#36", "deepinsight/insightface#1483")
CAUSE = "distributed_gradient_scale"
FAMILY = "distributed"

WORLD_SIZE = 8
B = 8  # per GPU; 64 candidates after the gather
N = 4096
LR = 2.2e-4  # tuned on the single-GPU run with batch 64


def all_gather_features(per_rank: list[torch.Tensor], rank: int) -> torch.Tensor:
    """dist.all_gather(gathered, feats); gathered[rank] = feats; torch.cat(gathered): only the own shard has a grad."""
    return torch.cat([f if r == rank else f.detach() for r, f in enumerate(per_rank)])


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(N, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    per_step = WORLD_SIZE * B
    for step in range(steps):
        if step % (N // per_step) == 0:
            order = torch.randperm(N, generator=g)  # DistributedSampler: a new shuffle each epoch
        start = (step % (N // per_step)) * per_step
        shards = order[start:start + per_step].view(WORLD_SIZE, B)
        outs = [model(tokens[s], texts[s]) for s in shards]  # each rank's forward on its own shard
        img = [o[0] for o in outs]
        txt = [o[1] for o in outs]
        scale = model.logit_scale.exp()
        optimizer.zero_grad()
        rank_losses = []
        for rank in range(WORLD_SIZE):
            all_img, all_txt = all_gather_features(img, rank), all_gather_features(txt, rank)
            logits = scale * all_img @ all_txt.t()  # the global 64 x 64 logits, the same on every rank
            loss = clip_loss(logits)
            if rank == 0:
                obs = (loss, all_img, all_txt, logits)
            rank_losses.append(loss * WORLD_SIZE if fixed else loss)
        torch.stack(rank_losses).mean().backward()  # DDP averages the ranks' gradients
        loss, all_img, all_txt, logits = obs
        session.observe(step, losses={"clip": loss}, embeddings={"image": all_img, "text": all_txt}, logits=logits,
                        candidates=WORLD_SIZE * B)
        optimizer.step()
    session.close()
