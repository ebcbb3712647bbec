"""A slide encoder built through a factory that freezes it by default: the model meant to be trained never is.

What the user did: followed TRIDENT's tutorial 3 and built the attention-MIL slide encoder with
`ABMILSlideEncoder(input_feature_dim=..., n_heads=..., head_dim=..., dropout=..., gated=...)` over patch
features from a frozen patch encoder, then aligned the slide embedding with a frozen, pretrained text encoder's
caption embedding (text tower locked, as in LiT / TITAN-style alignment): symmetric CLIP loss with a learnable
logit scale, AdamW over `model.parameters()`. The slide encoder is the part the script exists to train.

What went wrong and why: TRIDENT's `BaseSlideEncoder.__init__(freeze=True, ...)` sets `requires_grad = False`
on every parameter of the built model and puts it in eval mode, unless `freeze=False` is passed. ABMIL has no
pretrained weights ("training from scratch"), so the default freezes a randomly initialised encoder. Its
parameters get no gradient; AdamW skips them; the slide embeddings stay random projections of the patches,
unrelated to the locked caption embeddings. The only trainable tensor is the logit scale, which can only pull
the logits toward the uniform softmax: the loss starts above ln(B) and drifts down toward it. No error.

Threads: mahmoodlab/TRIDENT#122 ("Why freezed feature_encoder in tutorial 3?": the tutorial's
`ABMILSlideEncoder(...)` is untrainable because the base class freezes it; the maintainer: a bug, will fix),
mahmoodlab/TRIDENT#126 (the fix, "hot fix: do NOT freeze ABMIL for training from scratch": the tutorial now
passes `freeze=False`).

The fix: `ABMILSlideEncoder(..., freeze=False)`.

Validation (benchmarks/real_faults/validate.py --half test24, seeds 0 1 2, final loss / ln(B), B = 32):
fault 1.4134 / 1.3672 / 1.2682 (the logit scale is the only tensor with a gradient), fixed 0.2893 / 0.2540 /
0.2516.

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, clip_loss, token_pairs

THREADS = ("mahmoodlab/TRIDENT#122", "mahmoodlab/TRIDENT#126")
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"

B = 32


# -- trident.slide_encoder_models (condensed: the parts the tutorial touches) ------------------------
class ABMIL(nn.Module):
    """Gated attention MIL pooling (tanh attention x sigmoid gate, softmax over the patches), one branch."""

    def __init__(self, feature_dim, head_dim, n_heads=1, dropout=0.0, gated=True):
        super().__init__()
        self.gated, self.n_heads = gated, n_heads
        self.attention_heads = nn.ModuleList([nn.Sequential(nn.Linear(feature_dim, head_dim), nn.Tanh(),
                                                            nn.Dropout(dropout)) for _ in range(n_heads)])
        if gated:
            self.gating_layers = nn.ModuleList([nn.Sequential(nn.Linear(feature_dim, head_dim), nn.Sigmoid(),
                                                              nn.Dropout(dropout)) for _ in range(n_heads)])
        self.branching_layers = nn.ModuleList([nn.Linear(head_dim, 1) for _ in range(n_heads)])
        if n_heads > 1:
            self.condensing_layer = nn.Linear(n_heads * feature_dim, feature_dim)

    def forward(self, features):
        outs = []
        for i in range(self.n_heads):
            a = self.attention_heads[i](features)
            if self.gated:
                a = a * self.gating_layers[i](features)
            scores = self.branching_layers[i](a).softmax(dim=1)  # (b, n, 1) over the patches
            outs.append(torch.einsum("bnr,bnf->brf", scores, features))
        out = torch.cat(outs, dim=-1)
        return self.condensing_layer(out) if self.n_heads > 1 else out


class BaseSlideEncoder(nn.Module):
    def __init__(self, freeze: bool = True, **build_kwargs):
        super().__init__()
        self.model, self.precision, self.embedding_dim = self._build(**build_kwargs)
        if freeze and self.model is not None:  # set all parameters to be non-trainable
            for param in self.model.parameters():
                param.requires_grad = False
            self.model.eval()


class ABMILSlideEncoder(BaseSlideEncoder):
    def _build(self, input_feature_dim, n_heads, head_dim, dropout, gated, pretrained=False):
        assert pretrained is False, "ABMILSlideEncoder has no corresponding pretrained models."
        model = nn.ModuleDict({
            "pre_attention_layers": nn.Sequential(nn.Linear(input_feature_dim, input_feature_dim), nn.GELU(),
                                                  nn.Dropout(0.1)),
            "image_pooler": ABMIL(input_feature_dim, head_dim, n_heads, dropout, gated),
            "post_attention_layers": nn.Sequential(nn.Linear(input_feature_dim, input_feature_dim), nn.GELU(),
                                                   nn.Dropout(0.1)),
        })
        return model, torch.float32, input_feature_dim

    def forward(self, features):
        x = self.model["pre_attention_layers"](features)
        x = self.model["image_pooler"](x)[:, 0]  # (b, 1, f) -> (b, f)
        return self.model["post_attention_layers"](x)


# -- the user's script -------------------------------------------------------------------------------
class SlideTextAligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        kwargs = dict(input_feature_dim=D, n_heads=1, head_dim=16, dropout=0.0, gated=True)
        self.feature_encoder = ABMILSlideEncoder(freeze=False, **kwargs) if fixed else ABMILSlideEncoder(**kwargs)
        # stands in for a pretrained caption encoder (random weights here), deliberately locked
        self.text_encoder = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, D))
        self.text_encoder.requires_grad_(False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, patch_features, captions):
        slide = self.feature_encoder(patch_features)
        text = self.text_encoder(captions)
        return F.normalize(slide, dim=-1), F.normalize(text, dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    patches, captions = token_pairs(2048, seed)  # (n, 16 patches, D) frozen patch features, (n, DT) captions
    model = SlideTextAligner(fixed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(patches), (B,), generator=g)
        img, txt = model(patches[idx], captions[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        optimizer.step()
    session.close()
