"""The trainable projection heads live in the alignment-loss module, which is not part of the model the
optimizer was built from: only the logit scale is ever updated, the heads keep their random init and the
contrastive loss stays at ln(B).

What the user did: LiT-style alignment on top of frozen encoders (a "pretrained" flamingo-pytorch
PerceiverResampler over patch tokens, frozen; pooled text features from a frozen text tower), training only
the projection heads and the temperature (as in the openai/CLIP-style tutorials with `trainable = False` for
both encoders). The heads were written into the loss class, REPA / Geometry-Forcing style: `AlignmentLoss(
nn.Module)` owns `self.image_proj` and `self.text_proj` and computes the InfoNCE; the model keeps the frozen
encoders and the learnable `logit_scale`. The optimizer was built the usual way, `AdamW([p for p in
model.parameters() if p.requires_grad])`: the loss module's parameters are in no param group. Gradients
reach the heads on every step (backward fills their .grad), nothing ever applies them; the only tensor
updated is the logit scale, which drifts down (slowly, at lr 1e-3) towards a flatter softmax.

The thread: CIntellifusion/GeometryForcing#13, "Learnable parameters are not added to the optimizer, no real
training can happen! The learnable parameters of the class VGGTAlignmentLoss are never added to the
optimizer ... specifically self.projectors". Maintainer: "Thanks for mention this bug! The projector wasn't
trained in the initial commit ... I solved this bug by adding adding projector to the optimizer." (There the
diffusion model still trained through the frozen projector; here the heads are the only trainable mapping,
so nothing learns.)

Thread: CIntellifusion/GeometryForcing#13
Fix: build the optimizer over the model's trainable parameters *and* the loss module's
(`list(model_params) + list(criterion.parameters())`).

Validation (benchmarks/real_faults/validate.py --half test17 --only case_ii_loss_projectors_not_optimized,
seeds 0 1 2, B = 32, ln(B) = 3.4657, 120 steps): fault final loss / ln(B) = 1.3988 / 1.3783 / 1.3455
(final 4.848 / 4.777 / 4.663 against a first loss of 5.093 / 4.703 / 4.448: random heads at logit scale
14.3, only the scale moving, slowly); fixed 0.0456 / 0.0543 / 0.0494.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import math
import pathlib

import torch
import torch.nn.functional as F
from common import DT, D, E, clip_loss, token_pairs
from torch import nn

THREADS = ("CIntellifusion/GeometryForcing#13",)
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer setup"

B, LR = 32, 1e-3


class FrozenEncoders(nn.Module):
    """Frozen image side (a pretrained resampler, pooled over latents) and the learnable temperature."""

    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.resampler.requires_grad_(False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens):
        return self.resampler(tokens.unsqueeze(1))[:, 0].mean(1)  # (B, T, D) -> (B, D)


class AlignmentLoss(nn.Module):
    """InfoNCE with its own projectors (the loss-class-owns-the-heads pattern of the thread)."""

    def __init__(self):
        super().__init__()
        self.image_proj = nn.Sequential(nn.Linear(D, E), nn.GELU(), nn.Linear(E, E))
        self.text_proj = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))

    def forward(self, img_feat, txt_feat, logit_scale):
        img = F.normalize(self.image_proj(img_feat), dim=-1)
        txt = F.normalize(self.text_proj(txt_feat), dim=-1)
        logits = logit_scale.exp() * img @ txt.t()
        return clip_loss(logits), logits, img, txt


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = FrozenEncoders()
    criterion = AlignmentLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    if fixed:
        params += list(criterion.parameters())
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, optimizer, batch_size=B) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            with torch.no_grad():
                feats = model(tokens[idx])  # frozen tower
            loss, logits, img, txt = criterion(feats, texts[idx], model.logit_scale)
            optimizer.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=B, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            optimizer.step()


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
