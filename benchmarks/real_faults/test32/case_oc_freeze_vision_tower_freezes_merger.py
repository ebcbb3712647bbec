"""`freeze_vision_tower` freezes the projector too: in this model the merger (the projector into the text
space) is a sub-module of the vision tower, so nothing trainable is left but the logit scale.

What the user did: a projector-only alignment stage in the Qwen2-VL layout: `model.visual` is the vision
tower (a flamingo-pytorch PerceiverResampler over the frozen patch tokens) and it owns `visual.merger`, the
LayerNorm + MLP that maps the pooled vision features into the text embedding space; `model.language` is a
pretrained text tower kept frozen. The plan is the usual first stage: freeze the vision tower, freeze the
language side, train only the merger (and the CLIP logit scale). The script freezes by module, as the
trainer's `freeze_vision_tower` / `train_mm_projector_only` options did:
`model.visual.requires_grad_(False)`, `model.language.requires_grad_(False)`, then builds AdamW over the
parameters that still require gradients.

What went wrong and why: `requires_grad_(False)` on `model.visual` recurses into every child, and the
merger lives inside `visual`, so the projector is frozen with the tower. The optimizer receives only the
logit scale; every embedding comes from frozen random weights and no parameter that could align image and
caption gets a gradient. The loss stays above ln B (the logit scale alone can only pull it back toward
chance).

Thread: hiyouga/LlamaFactory#6754: fine-tuning Qwen2-VL with `freeze_vision_tower: true` the reporter found
`patch_merger` (the only projector in Qwen2-VL) with `requires_grad=False`, since the merger sits inside the
vision model, so only the LLM was being trained; the maintainer answered that `freeze_vision_tower` is not
meant to freeze the merger and told the reporter to update the code, after which the reporter confirmed it
was solved.

Fix (fixed=True): freeze the vision tower's parameters except those under `merger.` (the maintainers'
behaviour: the tower frozen, the projector trainable).

Validation (validate.py --half test32, 100 steps, B=64, final loss / ln B):
  fault: seed 0 1.1391, seed 1 1.1494, seed 2 1.3272 (loss 4.74-5.52 vs ln 64 = 4.159)
  fixed: seed 0 0.1254, seed 1 0.1070, seed 2 0.0945

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("hiyouga/LlamaFactory#6754",)
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"


class PatchMerger(nn.Module):
    """The projector: LayerNorm then a 2-layer MLP into the text space (Qwen2-VL's PatchMerger shape)."""

    def __init__(self):
        super().__init__()
        self.ln_q = nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, E))

    def forward(self, x):
        return self.mlp(self.ln_q(x))


class VisionTower(nn.Module):
    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.blocks = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.merger = PatchMerger()

    def forward(self, tokens):
        return self.merger(self.blocks(tokens.unsqueeze(1))[:, 0].mean(1))


class VisionLanguageAligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = VisionTower()
        self.language = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))  # "pretrained", frozen
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.visual(tokens), dim=-1), F.normalize(self.language(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    B = 64
    freeze_vision_tower, train_mm_projector_only = True, True
    model = VisionLanguageAligner()
    if freeze_vision_tower:
        if fixed:  # freeze the tower, keep the merger trainable
            for name, p in model.visual.named_parameters():
                if not name.startswith("merger."):
                    p.requires_grad_(False)
        else:  # the user's code: the whole `visual` module, merger included
            model.visual.requires_grad_(False)
    if train_mm_projector_only:
        model.language.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    try:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            x, t = tokens[idx], texts[idx]
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=x)
            optimizer.step()
            optimizer.zero_grad()
    finally:
        session.close()
