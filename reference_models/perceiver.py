"""Perceiver resampler: learned latents that cross-attend to the input tokens.

Attention probabilities go through an `nn.Softmax` submodule, so a forward hook on
`...cross_attn.softmax` / `...self_attn.softmax` sees them (B, heads, queries, keys) without a second
forward pass; `F.scaled_dot_product_attention` would hide them.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def init_latents(num_latents: int, dim: int, mode: str, std: float) -> nn.Parameter:
    """Latent initialisation switch.

    "seed" reproduces the seed's encoders/perceiver.py:155-156 verbatim: the `randn` draw is dead
    code because `normal_` overwrites it in place, so the effective init is N(0, std^2).
    """
    if mode == "seed":
        latents = nn.Parameter(torch.randn(num_latents, dim))
        nn.init.normal_(latents, std=std)
    elif mode == "randn":  # what the seed's first line alone would give: std 1
        latents = nn.Parameter(torch.randn(num_latents, dim))
    elif mode == "normal":  # the seed's "fix option B": identical distribution to "seed"
        latents = nn.Parameter(torch.empty(num_latents, dim))
        nn.init.normal_(latents, mean=0.0, std=std)
    elif mode == "trunc_normal":
        latents = nn.Parameter(torch.empty(num_latents, dim))
        nn.init.trunc_normal_(latents, std=std, a=-2 * std, b=2 * std)
    elif mode == "xavier":
        latents = nn.Parameter(torch.empty(num_latents, dim))
        nn.init.xavier_uniform_(latents)
    elif mode == "zeros":  # every latent identical: a symmetry nothing can break
        latents = nn.Parameter(torch.zeros(num_latents, dim))
    else:
        raise ValueError(f"unknown latent init {mode!r}")
    return latents


class Attention(nn.Module):
    """Pre-norm multi-head attention; cross-attention when a context is given."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim else None
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, Q, D = x.shape
        x = self.norm(x)
        context = x if context is None else self.norm_context(context)
        q = self.to_q(x)  # (B, Q, D)
        k, v = self.to_kv(context).chunk(2, dim=-1)  # (B, K, D) each

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, t.shape[1], self.heads, self.head_dim).transpose(1, 2)  # (B, H, *, hd)

        q, k, v = heads(q), heads(k), heads(v)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, Q, K)
        probs = self.softmax(scores)
        out = (probs @ v).transpose(1, 2).reshape(B, Q, D)  # (B, Q, D)
        return self.to_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mult)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class PerceiverLayer(nn.Module):
    """latent->input cross-attention, latent self-attention, MLP; each residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.cross_attn = Attention(dim, heads, context_dim=dim)
        self.self_attn = Attention(dim, heads)
        self.mlp = FeedForward(dim, mlp_ratio)

    def forward(self, latents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        latents = latents + self.cross_attn(latents, tokens)
        latents = latents + self.self_attn(latents)
        return latents + self.mlp(latents)


class Perceiver(nn.Module):
    def __init__(self, dim: int, num_latents: int, num_layers: int, heads: int, mlp_ratio: int,
                 latent_init: str = "seed", latent_init_std: float = 0.02):
        super().__init__()
        self.latents = init_latents(num_latents, dim, latent_init, latent_init_std)  # (L, D)
        self.layers = nn.ModuleList(PerceiverLayer(dim, heads, mlp_ratio) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        latents = self.latents.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # (B, L, D)
        for layer in self.layers:
            latents = layer(latents, tokens)
        return self.norm_out(latents)  # (B, L, D)
