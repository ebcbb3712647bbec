"""What every real-fault script shares: synthetic paired data, a few peer-library models, and the
`watch` factory the runner hands to each script (the real `diagnose.watch`, or `no_watch` for the
timing baseline). The models come from PyPI packages we did not write: flamingo-pytorch and
perceiver-pytorch resamplers, transformers CLIP built from a tiny config (random weights, no download).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

D, T, DT, E = 32, 16, 24, 32  # patch-token width, tokens per image, text-feature width, shared embedding


# -- data --------------------------------------------------------------------------------------------
def token_pairs(n: int = 1024, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-backbone style pairs: patch tokens (n, T, D) and pooled text features (n, DT), both made
    from 8 shared latent concepts per item, so a matching caption is predictable from its image."""
    g = torch.Generator().manual_seed(seed)
    concepts = torch.randn(n, 8, generator=g)
    tokens = (concepts @ torch.randn(8, D, generator=g)).unsqueeze(1) + 0.5 * torch.randn(n, T, D, generator=g)
    texts = concepts @ torch.randn(8, DT, generator=g) + 0.1 * torch.randn(n, DT, generator=g)
    return tokens, texts


VOCAB, SEQ, IMG = 64, 8, 16  # tiny CLIP: token vocabulary, caption length (EOS last), image side


def image_caption_pairs(n: int = 1024, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels (n, 3, IMG, IMG) and token ids (n, SEQ) for a transformers CLIPModel: both are functions of
    the same latent vector, each caption word the argmax of a random projection of it; EOS closes each."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=g)
    pixels = (z @ torch.randn(8, 3 * IMG * IMG, generator=g)).view(n, 3, IMG, IMG) / math.sqrt(8)
    pixels = pixels + 0.3 * torch.randn(n, 3, IMG, IMG, generator=g)
    words = torch.einsum("nk,skv->nsv", z, torch.randn(SEQ - 1, 8, VOCAB - 2, generator=g)).argmax(-1) + 1
    eos = torch.full((n, 1), VOCAB - 1)
    return pixels, torch.cat([words, eos], dim=1)


def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over an (B, B) image->text logit matrix (open_clip's ClipLoss without gathering)."""
    labels = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


# -- models ------------------------------------------------------------------------------------------
class ResamplerAligner(nn.Module):
    """Patch tokens -> flamingo-pytorch PerceiverResampler -> mean over latents -> projection; text ->
    projection; learnable log logit scale initialised at ln(1/0.07) (open_clip)."""

    def __init__(self, latents: int = 8, depth: int = 2):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=depth, dim_head=8, heads=2, num_latents=latents)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, tokens: torch.Tensor) -> torch.Tensor:
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]  # (B, T, D) -> (B, latents, D)
        return self.proj(lat.mean(1))

    def forward(self, tokens, texts):
        return F.normalize(self.encode_image(tokens), dim=-1), F.normalize(self.text(texts), dim=-1)


class PerceiverAligner(nn.Module):
    """Patch tokens -> perceiver-pytorch Perceiver (latent cross-attention, no classifier head) -> mean
    over latents -> projection; text -> small MLP."""

    def __init__(self, latents: int = 8):
        super().__init__()
        from perceiver_pytorch import Perceiver

        self.perceiver = Perceiver(num_freq_bands=4, depth=2, max_freq=8.0, input_channels=D, input_axis=1,
                                   num_latents=latents, latent_dim=D, cross_heads=1, latent_heads=2,
                                   cross_dim_head=8, latent_dim_head=8, final_classifier_head=False,
                                   fourier_encode_data=False)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        lat = self.perceiver(tokens, return_embeddings=True)  # (B, T, D) -> (B, latents, D)
        return F.normalize(self.proj(lat.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def tiny_clip(seed: int = 0, width: int = 32, **overrides: Any):
    """A transformers CLIPModel from a tiny config (random weights, nothing downloaded); `width` is the hidden
    size of both towers (even; the MLPs are twice as wide)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    text = dict(vocab_size=VOCAB, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=SEQ, eos_token_id=VOCAB - 1, bos_token_id=0,
                pad_token_id=0)
    vision = dict(image_size=IMG, patch_size=4, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                  num_attention_heads=2)
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=E, **overrides)
    cfg._attn_implementation = "eager"
    return CLIPModel(cfg)


# -- the watch the runner passes in ------------------------------------------------------------------
class _NoWatch:
    """Same calls as `diagnose.watch`, doing nothing: the baseline for the probe overhead ratio."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def observe(self, *args, **kwargs):
        return []

    def evaluate_retrieval(self, *args, **kwargs):
        return {}

    def data_signal(self, *args, **kwargs):
        return None

    def __getattr__(self, name):  # close, after_step, coverage, ...: whatever else a watch has, doing nothing
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def no_watch(*args, **kwargs) -> _NoWatch:
    return _NoWatch()
