"""Reentrant activation checkpointing around the only trainable block, fed by a frozen backbone: the
adapter never receives a gradient, so only the temperature moves.

What the user did: vision->text alignment on top of frozen pretrained towers (the CLIP/SigLIP adapter
recipe): the vision backbone and the text tower are frozen (`requires_grad_(False)`), a flamingo-pytorch
PerceiverResampler plus a projection (the "adapter") is trained together with the logit scale. To save
activation memory the user wraps the adapter in `torch.utils.checkpoint.checkpoint(..., use_reentrant=True)`
(the reentrant variant, the long-time default of HF / open_clip gradient checkpointing).

What went wrong and why: the reentrant checkpoint only builds a backward node when at least one *input*
tensor requires grad ("At least one input and output must have requires_grad=True for the reentrant variant.
If this condition is unmet, the checkpointed part of the model will not have gradients"). Its input is the
output of the frozen backbone, which does not require grad, so the checkpoint's output is detached from the
adapter's parameters: torch only warns "None of the inputs have requires_grad=True. Gradients will be None",
`loss.backward()` still runs (through the logit scale) and the optimizer steps, but every resampler and
projection weight keeps `grad=None` and never changes. The image embeddings stay those of the randomly
initialised adapter and the loss stays at (above) ln(B). This is the failure of NVIDIA TAO's CLIP/SigLIP2
LoRA mode (all base parameters frozen, reentrant HF checkpointing -> "the LoRA weights may receive no
gradients", fixed by switching to `use_reentrant=False`), of cloneofsimo/lora (LoRA weights not updated with
gradient checkpointing on) and of microsoft/LoRA#120 (all gradients None with checkpointing).

Threads: NVIDIA-TAO/tao-pytorch#106 (LoRA fine-tuning for CLIP: frozen base + reentrant checkpointing -> no
gradients to LoRA, fixed with use_reentrant=False), cloneofsimo/lora#26 (gradient checkpointing blocks LoRA
weight updates), microsoft/LoRA#120 (gradients None with checkpointing, LoRA not updated).

Fix (the thread's): non-reentrant checkpointing, `checkpoint(adapter, feats, use_reentrant=False)`, which
records gradients for the parameters inside even when the input does not require grad.

Validation (validate.py --half test31, seeds 0/1/2, 100 steps, B=32, ln(B)=3.4657), final loss / ln(B):
fault 1.1478 / 1.6006 / 1.4958 (final loss 3.978 / 5.547 / 5.184: the adapter never moves, only the logit
scale does), fixed 0.0732 / 0.0839 / 0.0662 (final loss 0.254 / 0.291 / 0.230).

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("NVIDIA-TAO/tao-pytorch#106", "cloneofsimo/lora#26", "microsoft/LoRA#120")
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"


class Adapter(nn.Module):
    """Trainable part: flamingo-pytorch PerceiverResampler over the backbone's patch features, mean over
    latents, projection into the shared space."""

    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        latents = self.resampler(feats.unsqueeze(1))[:, 0]
        return self.proj(latents.mean(1))


class FrozenTowerAligner(nn.Module):
    def __init__(self, reentrant: bool):
        super().__init__()
        self.reentrant = reentrant
        # stand-ins for the pretrained towers (random weights, nothing downloaded), both frozen
        self.vision_backbone = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.LayerNorm(D)).requires_grad_(False)
        self.text_tower = nn.Linear(DT, E).requires_grad_(False)
        self.adapter = Adapter()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        feats = self.vision_backbone(tokens)
        # activation checkpointing of the trainable adapter to save memory
        img = checkpoint(self.adapter, feats, use_reentrant=self.reentrant)
        return F.normalize(img, dim=-1), F.normalize(self.text_tower(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B, lr = 32, 1e-3
    tokens, texts = token_pairs(1024, seed)
    model = FrozenTowerAligner(reentrant=not fixed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
        optimizer.zero_grad()
    session.close()
