"""A contrastive loss over features gathered from all ranks with `torch.distributed.all_gather`, computed on the
gathered tensors alone: all_gather returns copies without autograd history, so no gradient reaches either tower and
the loss stays at chance for the gathered candidates. Four DDP ranks of a flamingo-pytorch PerceiverResampler
aligner are emulated side by side in one process: one model instance stands for the identical replicas, each rank
encodes its own shard of 16 pairs, `all_gather` copies every rank's features into fresh tensors under `no_grad`
(what the collective does), each rank computes its loss, and the backward pass runs on the mean of the ranks' losses
(DDP's gradient average). The watch sees rank 0.

What the user did: to score each sample against the whole global batch on several GPUs, the user wrote
`distributed_concat` (`output_tensors = [...]; torch.distributed.all_gather(output_tensors, tensor);
torch.cat(output_tensors)`) and replaced the local features with its result before computing the loss:
"pred_features = distributed_concat(pred_features)" (fast-reid, triplet loss). Here the same is done to the image and
text features of a CLIP loss: logits = scale * all_image @ all_text.T over the 64 gathered pairs.

What went wrong and why: `all_gather` is not differentiable; every slot of the gathered tensor, the rank's own
included, is a copy of the data only. The loss has a graph only through the learnable logit scale, so backward()
raises nothing, but the resampler, the projections and the text head get no gradient at all (checked with two gloo
processes and the thread's `tensor.clone()` output buffers: the concatenated tensor reports requires_grad=True, yet
the encoder's gradient is exactly zero). In the thread: "the loss cannot decrease normally at all" (translated); the
maintainer pointed to fast-reid's own loss, which gathers the embeddings but keeps the local ones, with their
gradient, as the anchors (`dist_mat = euclidean_dist(embedding, all_embedding)`).

The fix: the local features (with gradient) as rows against the gathered features as columns, targets offset by
the rank (rank * 16 + i), in both directions; the other ranks' features stay plain negatives.

Validation (validate.py, 100 steps, B = 64 candidates (16 per rank x 4 ranks), chance ln(B) = 4.159;
final loss / ln(B)):
  fault: seed 0 1.046, seed 1 1.065, seed 2 1.299 (only the logit scale moves)
  fixed: seed 0 0.026, seed 1 0.025, seed 2 0.023

Ground truth: distributed_gradient_missing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import ResamplerAligner, token_pairs

THREADS = ("JDAI-CV/fast-reid#490",)
CAUSE = "distributed_gradient_missing"
FAMILY = "distributed"

WORLD = 4  # ranks
B = 16  # per-rank batch
LR = 1e-3


def all_gather(tensor_list: list[torch.Tensor], per_rank: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for out, t in zip(tensor_list, per_rank):
            out.copy_(t)


def distributed_concat(per_rank: list[torch.Tensor], rank: int) -> torch.Tensor:
    output_tensors = [torch.zeros_like(per_rank[rank]) for _ in range(WORLD)]
    all_gather(output_tensors, per_rank)
    return torch.cat(output_tensors, dim=0)


def contrastive_loss(image_features, text_features, logit_scale, rank, fixed):
    all_image = distributed_concat(image_features, rank)
    all_text = distributed_concat(text_features, rank)
    if fixed:
        labels = torch.arange(B) + rank * B
        logits_per_image = logit_scale * image_features[rank] @ all_text.t()
        logits_per_text = logit_scale * text_features[rank] @ all_image.t()
    else:
        labels = torch.arange(WORLD * B)
        logits_per_image = logit_scale * all_image @ all_text.t()
        logits_per_text = logits_per_image.t()
    loss = 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))
    return loss, logits_per_image


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    session = watch(model, optimizer, batch_size=B, candidates=WORLD * B)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randperm(len(tokens), generator=g)[: WORLD * B].view(WORLD, B)
        image_features, text_features = [], []
        for rank in range(WORLD):
            img, txt = model(tokens[idx[rank]], texts[idx[rank]])
            image_features.append(img)
            text_features.append(txt)
        logit_scale = model.logit_scale.exp()
        losses = [contrastive_loss(image_features, text_features, logit_scale, r, fixed) for r in range(WORLD)]
        optimizer.zero_grad()
        torch.stack([l for l, _ in losses]).mean().backward()
        loss, logits = losses[0]
        session.observe(step, losses={"clip": loss}, embeddings={"image": image_features[0], "text": text_features[0]},
                        logits=logits, batch_size=B, candidates=WORLD * B)
        optimizer.step()
    session.close()
