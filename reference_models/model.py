"""Vision and text towers of the seed's two architectures (perceiver-mrl-rca.md, "Architecture Flow").

Direct:    (B, 577, 1024) -> Linear -> (B, 577, 4096) -> attention pool -> (B, 4096) -> L2
Perceiver: (B, 577, 1024) -> Linear -> (B, 577, 1024) -> Perceiver -> (B, 64, 1024)
           -> Linear final_projector -> (B, 64, 4096) -> mean pool | attention pool -> (B, 4096) -> L2
Text:      frozen encoder's pooled output (B, 768) -> Linear -> (B, 4096) -> L2

The frozen backbones are not modules here: the data sources hand over their outputs (patch tokens,
pooled text features), exactly what the trainable part of the seed's model sees.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import AlignmentConfig
from .perceiver import Perceiver


class SimpleAttentionPooling(nn.Module):
    """Learnable attention pooling ("simple"): linear scorer, softmax over tokens, weighted sum."""

    def __init__(self, dim: int, dropout: float = 0.0, softmax_dim: int = 1):
        super().__init__()
        self.scorer = nn.Linear(dim, 1)
        # softmax_dim=1 is the token axis of the (B, T) scores; 0 reproduces the classic bug of
        # normalising over the batch instead
        self.softmax = nn.Softmax(dim=softmax_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.scorer(x).squeeze(-1)  # (B, T)
        weights = self.dropout(self.softmax(scores))  # (B, T)
        return torch.einsum("bt,btd->bd", weights, x)  # (B, D)


class MeanPooling(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)  # the seed pools the perceiver latents with a plain mean over the latent axis


class VisionHead(nn.Module):
    """Everything trainable after the frozen vision backbone."""

    def __init__(self, cfg: AlignmentConfig):
        super().__init__()
        v, proj = cfg.vision_encoder, cfg.model.projection_dim
        self.use_perceiver = v.use_perceiver
        self.projector_no_grad = v.projector_no_grad  # fault-injection switch (schema.py)
        if v.use_perceiver:
            self.projector = nn.Linear(v.hidden_dim, v.perceiver_latent_dim)
            self.perceiver = Perceiver(
                v.perceiver_latent_dim, v.perceiver_num_latents, v.perceiver_num_layers,
                v.perceiver_num_heads, v.perceiver_mlp_ratio, v.perceiver_latent_init,
                v.perceiver_latent_init_std,
            )
            self.final_projector = nn.Linear(v.perceiver_latent_dim, proj)
            use_attention = v.perceiver_pooling == "attention"
        else:
            self.projector = nn.Linear(v.hidden_dim, proj)
            use_attention = v.use_attention_pooling
        self.pool = (
            SimpleAttentionPooling(proj, v.attention_pool_dropout, v.pooling_softmax_dim)
            if use_attention else MeanPooling()
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.projector_no_grad:  # fault injection: the projector gets no gradient
            with torch.no_grad():
                x = self.projector(tokens)
        else:
            x = self.projector(tokens)  # (B, T, D_latent | proj)
        if self.use_perceiver:
            x = self.perceiver(x)  # (B, L, D_latent)
            x = self.final_projector(x)  # (B, L, proj)
        return self.pool(x)  # (B, proj), not yet normalised


class AlignmentModel(nn.Module):
    """Trainable part of the alignment model plus the learnable temperature (open_clip layout)."""

    def __init__(self, cfg: AlignmentConfig):
        super().__init__()
        self.vision = VisionHead(cfg)
        self.text_projection = nn.Linear(cfg.text_encoder.hidden_dim, cfg.model.projection_dim)
        # open_clip: logit_scale lives in log space, init ln(1 / 0.07)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / cfg.losses.temperature_init)),
            requires_grad=cfg.losses.learnable_temperature,
        )
        self.max_log_scale = math.log(cfg.losses.max_logit_scale)
        # fault-injection switches (schema.py); the defaults are the healthy model
        self.l2_normalize = cfg.model.l2_normalize
        self.detach_text = cfg.text_encoder.detach_projection

    def encode_image(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.vision(tokens)
        return F.normalize(x, dim=-1) if self.l2_normalize else x

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        x = self.text_projection(text)
        if self.detach_text:  # fault injection: cut the gradient path to the text projection
            x = x.detach()
        return F.normalize(x, dim=-1) if self.l2_normalize else x

    def forward(self, tokens: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "image": self.encode_image(tokens),  # (B, proj), unit norm
            "text": self.encode_text(text),  # (B, proj), unit norm
            "logit_scale": self.logit_scale.exp(),
        }

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        # open_clip clamps the parameter after each optimizer step: exp(logit_scale) <= 100
        self.logit_scale.clamp_(0, self.max_log_scale)


def build_model(cfg: AlignmentConfig) -> AlignmentModel:
    return AlignmentModel(cfg)
