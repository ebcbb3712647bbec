"""Reduced scales of a config (full, small, tiny) and the check that a config fits in this machine's
memory before any of it is allocated."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

from .config import ConfigError
from .schema import AlignmentConfig


@dataclass(frozen=True)
class Scale:
    """A reduced scale keeps layers, heads, the token:latent ratio and the width ratios."""

    width_div: int  # divides every width (vision, latent, text, projection, MRL dims)
    grid: int  # patch grid side: tokens = 1 + grid**2; latents follow the config's token:latent ratio


SCALES = {
    "full": Scale(width_div=1, grid=24),
    "small": Scale(width_div=8, grid=12),  # 145 tokens; seed ratio 577/64 -> 16 latents
    "tiny": Scale(width_div=32, grid=6),  # 37 tokens -> 4 latents
}


# Lower bound of a training step's memory: fp32 weights, their gradients and AdamW's two moments
# (4 x 4 bytes per trainable parameter) plus one fp32 batch of input tokens (B, T, D). Activations
# come on top, so a config over this bound cannot run here; it would swap or be OOM-killed instead.
BYTES_PER_TRAINED_PARAM = 16


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not every platform has these
        return None


def check_fits_memory(cfg: AlignmentConfig, where: str = "config") -> None:
    """Refuse a model that cannot fit in this machine's memory before allocating any of it (the
    parameters are counted on the meta device: no storage)."""
    import torch

    from .model import build_model

    total = physical_memory()
    if total is None:
        return
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(cfg).parameters() if p.requires_grad)
    ds, v = cfg.dataset, cfg.vision_encoder
    need = BYTES_PER_TRAINED_PARAM * params + 4 * ds.batch_size * v.num_tokens * v.hidden_dim
    if need > total:
        raise ConfigError(
            f"{where}: the model needs at least {need / 2**30:.1f} GiB ({params:,} trained parameters at scale "
            f"'{cfg.scale}', batch {ds.batch_size} x {v.num_tokens} x {v.hidden_dim} tokens) but this machine has "
            f"{total / 2**30:.1f} GiB: check model.projection_dim, *.hidden_dim, dataset.batch_size")


def apply_scale(cfg: AlignmentConfig, scale: str) -> AlignmentConfig:
    """Return a copy of `cfg` shrunk to `scale` (widths already below the target are kept), after
    checking that it fits in memory."""
    out = _shrink(cfg, scale)
    check_fits_memory(out, out.source or out.name)
    return out


def _shrink(cfg: AlignmentConfig, scale: str) -> AlignmentConfig:
    if scale not in SCALES:
        raise ConfigError(f"--scale '{scale}': expected one of {', '.join(SCALES)}")
    s = SCALES[scale]
    out = copy.deepcopy(cfg)
    out.scale = scale
    if s.width_div == 1:
        return out
    v = out.vision_encoder

    def shrink(x: int, floor: int = 4) -> int:
        return max(floor, x // s.width_div)

    v.hidden_dim = shrink(v.hidden_dim)
    v.perceiver_latent_dim = max(v.perceiver_num_heads * 2, shrink(v.perceiver_latent_dim))
    v.perceiver_latent_dim -= v.perceiver_latent_dim % v.perceiver_num_heads
    # keep the configured token:latent ratio rather than assuming the seed's
    ratio = v.num_tokens / v.perceiver_num_latents
    v.num_tokens = 1 + s.grid**2
    v.perceiver_num_latents = max(1, round(v.num_tokens / ratio))
    out.text_encoder.hidden_dim = shrink(out.text_encoder.hidden_dim)
    out.model.projection_dim = shrink(out.model.projection_dim)
    dims = sorted({max(1, d // s.width_div) for d in out.losses.mrl_dims})
    out.losses.mrl_dims = [d for d in dims if d <= out.model.projection_dim]
    out.dataset.synthetic.concept_dim = max(8, out.dataset.synthetic.concept_dim // max(1, s.width_div // 4))
    if out.optimization.scale_transfers_lr:
        out.optimization.matrix_lr_multiplier *= s.width_div
    return out
