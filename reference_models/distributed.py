"""Gathering contrastive features across ranks (open_clip's `gather_features` conventions).

Under `torchrun` each rank embeds its own B rows. With `losses.gather_features` the image and text
features of every rank are all-gathered, so each row is scored against B x world candidates (chance
ln(B*W), not ln(B)). open_clip's two switches:

- `gather_with_grad`: the gather is differentiable (torch.distributed.nn.all_gather; its backward sums
  the gradients of every rank's loss into the local slice, which DDP's averaging then divides by W).
  Without it the other ranks' features are constants and only the local slice carries gradient.
- `local_loss`: each rank scores only its own rows (B x B*W logits, labels offset by rank*B) instead
  of computing the whole (B*W x B*W) matrix on every rank.

Pure helpers: nothing here starts a process group. `world()` reads the one that is running.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    """(rank, world_size) of the running process group; (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(image: torch.Tensor, text: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(B*W, D) image and text features of every rank, in rank order."""
    rank, size = world()
    if size == 1:
        return image, text
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(image)), torch.cat(all_gather(text))
    parts_i = [torch.empty_like(image) for _ in range(size)]
    parts_t = [torch.empty_like(text) for _ in range(size)]
    dist.all_gather(parts_i, image.detach().contiguous())
    dist.all_gather(parts_t, text.detach().contiguous())
    # open_clip: put the local tensors back so the local slice keeps its gradient
    parts_i[rank], parts_t[rank] = image, text
    return torch.cat(parts_i), torch.cat(parts_t)


def gathered_logits(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, *, gather: bool,
                    with_grad: bool, local: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image->text logits, text->image logits, labels) of the configured contrastive layout.

    Not gathered: (B, B). Gathered, not local: (B*W, B*W) on every rank. Gathered and local: (B, B*W)
    per direction, labels offset by rank * B. The candidate count per row is `logits.shape[1]`.
    """
    rank, size = world()
    if not gather or size == 1:
        logits = logit_scale * image @ text.t()
        return logits, logits.t(), torch.arange(image.shape[0], device=image.device)
    all_image, all_text = gather_features(image, text, with_grad)
    if local:
        labels = torch.arange(image.shape[0], device=image.device) + rank * image.shape[0]
        return logit_scale * image @ all_text.t(), logit_scale * text @ all_image.t(), labels
    logits = logit_scale * all_image @ all_text.t()
    return logits, logits.t(), torch.arange(all_image.shape[0], device=image.device)


def symmetric_ce(logits_i2t: torch.Tensor, logits_t2i: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels))


def gradient_scale(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, *, gather: bool,
                   with_grad: bool, local: bool) -> dict[str, float]:
    """How the gradient DDP applies compares with the gradient of the global contrastive loss.

    Collective: every rank must call it at the same step. The configured loss is differentiated with
    respect to this rank's (detached) features; DDP averages parameter gradients over the W ranks, so
    the applied gradient is that divided by W. The reference is the gradient, with respect to the same
    slice, of the symmetric InfoNCE over all B*W rows as one process would compute it. Returns the norm
    ratio (1.0: right scale; 1/W: gathered without grad and not local) and the cosine, both averaged
    over ranks so every rank records the same numbers.
    """
    rank, size = world()
    B = image.shape[0]
    img = image.detach().float().requires_grad_(True)
    txt = text.detach().float().requires_grad_(True)
    scale = logit_scale.detach().float()
    delivered = torch.autograd.grad(symmetric_ce(*gathered_logits(img, txt, scale, gather=gather, with_grad=with_grad,
                                                                 local=local)), (img, txt))
    all_i, all_t = gather_features(image.detach().float(), text.detach().float(), with_grad=False)
    all_i, all_t = all_i.clone().requires_grad_(True), all_t.clone().requires_grad_(True)
    logits = scale * all_i @ all_t.t()
    ref = torch.autograd.grad(symmetric_ce(logits, logits.t(), torch.arange(all_i.shape[0])), (all_i, all_t))
    g = torch.cat([d.flatten() for d in delivered]) / size
    t = torch.cat([r[rank * B:(rank + 1) * B].flatten() for r in ref])
    stats = torch.tensor([float(g.norm() / t.norm().clamp_min(1e-30)), float(F.cosine_similarity(g, t, dim=0))],
                         dtype=torch.float64)
    if size > 1:
        dist.all_reduce(stats)
        stats /= size
    return {"dist_grad_scale": float(stats[0]), "dist_grad_cosine": float(stats[1])}
