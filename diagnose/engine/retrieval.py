"""Held-out retrieval of paired embeddings: R@K both directions, chance K/N beside it.

Non-finite embeddings give NaN recalls (and a count of the non-finite rows), never a score: ranking
NaN similarities would otherwise put every positive first.
"""

from __future__ import annotations

import torch

KS = (1, 5, 10)


def _recall(sim: torch.Tensor, k: int) -> float:
    n = sim.shape[0]
    pos = sim.diagonal().unsqueeze(1)
    rank = (sim > pos).sum(dim=1)  # candidates scored strictly above the positive
    return float((rank < min(k, n)).float().mean())


def retrieval_metrics(image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    image, text = image.detach().float(), text.detach().float()
    if image.shape[0] != text.shape[0] or image.dim() != 2 or text.dim() != 2:
        raise ValueError(f"retrieval needs paired (N, D) embeddings, got {tuple(image.shape)} and {tuple(text.shape)}")
    n = image.shape[0]
    bad = int((~torch.isfinite(image)).any(dim=1).sum() + (~torch.isfinite(text)).any(dim=1).sum())
    out: dict[str, float] = {"num_candidates": float(n), "nonfinite_embeddings": float(bad)}
    img = torch.nn.functional.normalize(image, dim=-1)
    txt = torch.nn.functional.normalize(text, dim=-1)
    sim = img @ txt.t()
    for k in KS:
        i2t = float("nan") if bad else _recall(sim, k)
        t2i = float("nan") if bad else _recall(sim.t(), k)
        out.update({f"i2t_r@{k}": i2t, f"t2i_r@{k}": t2i, f"r@{k}": 0.5 * (i2t + t2i), f"chance@{k}": min(1.0, k / n)})
    return out
