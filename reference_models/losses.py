"""Symmetric CLIP InfoNCE and the Matryoshka (MRL) loss; every component returned separately.

Chance value: at uniform logits each row's cross-entropy is ln(B), B = candidates per row, so the
symmetric loss equals ln(B) exactly. A loss flat at ln(B) means "no better than guessing".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import gathered_logits, symmetric_ce
from .schema import LossConfig


def contrastive_logits(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    return logit_scale * image @ text.t()  # (B, B): rows = images, columns = texts


def symmetric_infonce(logits: torch.Tensor) -> torch.Tensor:
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def chance_loss(num_candidates: int) -> float:
    return math.log(num_candidates)


class ClipLoss(nn.Module):
    """Under torchrun, `gather`/`with_grad`/`local` follow open_clip (reference_models/distributed.py);
    the returned logits are the image->text rows this rank scores: (B, B), (B*W, B*W) or (B, B*W)."""

    def __init__(self, gather: bool = False, with_grad: bool = False, local: bool = False):
        super().__init__()
        self.layout = {"gather": gather, "with_grad": with_grad, "local": local}

    def forward(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor):
        i2t, t2i, labels = gathered_logits(image, text, logit_scale, **self.layout)
        return symmetric_ce(i2t, t2i, labels), i2t


class MRLLoss(nn.Module):
    """Nested prefixes: truncate to d, re-normalise, contrastive loss per d.

    With `sample_single` one d is drawn per call (the seed's `sample_single_mrl_dim`), from the
    generator passed in so runs stay reproducible.
    """

    def __init__(self, dims: list[int], sample_single: bool, clip: ClipLoss | None = None):
        super().__init__()
        self.dims = list(dims)
        self.sample_single = sample_single
        self.clip = clip or ClipLoss()  # the same gathering as the full-dim loss

    def forward(self, image, text, logit_scale, generator: torch.Generator | None = None):
        if self.sample_single:
            i = int(torch.randint(len(self.dims), (1,), generator=generator))
            dims = [self.dims[i]]
        else:
            dims = self.dims
        per_dim = {}
        for d in dims:
            img = F.normalize(image[:, :d], dim=-1)
            txt = F.normalize(text[:, :d], dim=-1)
            per_dim[d] = self.clip(img, txt, logit_scale)[0]
        return per_dim


@dataclass
class LossOutput:
    total: torch.Tensor  # what backward() runs on: sum of weight * component
    components: dict[str, torch.Tensor]  # objective values: loss_clip, loss_mrl
    weights: dict[str, float]
    logged: dict[str, float]  # what a training log would print (mrl_log_mode decides loss_mrl)
    logits: torch.Tensor  # (B, B) image->text logits of the full-dim CLIP loss
    mrl_dims: list[int] = field(default_factory=list)  # dims evaluated this step
    chance: float = 0.0  # ln(candidates per row): ln(B), ln(B*W) when features are gathered
    candidates: int = 0  # columns each row is scored against (logits.shape[1])
    distributed: dict[str, float] = field(default_factory=dict)  # gradient-scale check under torchrun


class AlignmentLoss(nn.Module):
    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        self.clip = ClipLoss(cfg.gather_features, cfg.gather_with_grad, cfg.local_loss)
        self.mrl = MRLLoss(cfg.mrl_dims, cfg.sample_single_mrl_dim, self.clip)

    def forward(self, image, text, logit_scale, generator: torch.Generator | None = None) -> LossOutput:
        clip, logits = self.clip(image, text, logit_scale)
        components = {"loss_clip": clip}
        weights = {"loss_clip": self.cfg.contrastive}
        per_dim = {}
        if self.cfg.mrl > 0:
            per_dim = self.mrl(image, text, logit_scale, generator)
            components["loss_mrl"] = torch.stack(list(per_dim.values())).mean()
            weights["loss_mrl"] = self.cfg.mrl
        total = sum(weights[k] * v for k, v in components.items())
        logged = {"total": float(total.detach()), "loss_clip": float(clip.detach())}
        if per_dim:
            if self.cfg.mrl_log_mode == "seed":
                # seed models/losses.py:170-173: the sum over whatever dims were evaluated, logged
                # under a name that reads as the full MRL loss
                logged["loss_mrl"] = float(sum(per_dim.values()).detach())
            else:
                logged["loss_mrl"] = float(components["loss_mrl"].detach())
                logged["mrl_dim"] = float(next(iter(per_dim))) if len(per_dim) == 1 else float("nan")
                for d, v in per_dim.items():
                    logged[f"loss_mrl@{d}"] = float(v.detach())
            if len(per_dim) < len(self.mrl.dims):
                # what the MRL objective is over every nested dim, for comparison with the log
                with torch.no_grad():
                    full = MRLLoss(self.mrl.dims, sample_single=False,
                                   clip=self.clip)(image.detach(), text.detach(), logit_scale.detach())
                logged["loss_mrl_all_dims"] = float(torch.stack(list(full.values())).mean())
        return LossOutput(
            total=total, components=components, weights=weights, logged=logged, logits=logits,
            mrl_dims=list(per_dim), chance=chance_loss(logits.shape[1]), candidates=int(logits.shape[1]),
        )
