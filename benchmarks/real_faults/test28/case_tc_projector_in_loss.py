"""The trainable projectors live inside the loss module, and the optimizer is built from `model.parameters()`
only: the projectors get gradients every step but nothing ever applies them.

What the user did: alignment on top of a frozen backbone (`common.ResamplerAligner` standing in for the
pretrained encoders: patch tokens -> flamingo-pytorch PerceiverResampler -> projection; text features ->
projection; all of it frozen with `requires_grad_(False)`). The only new, trainable parts are two projection
heads and the logit scale, which the user put in the criterion, like `self.embed` inside
`OurDistillationLoss` in roymiles/Simple-Recipe-Distillation: `ProjectedClipLoss(nn.Module)` owns
`image_embed`, `text_embed` and `logit_scale`, projects both feature batches, normalises them and returns the
CLIP loss. The optimizer line was kept from the training template: `AdamW(model.parameters(), ...)`.

What went wrong and why: `model.parameters()` holds the frozen backbone only (no gradients, so its steps do
nothing), and the criterion's parameters are in no param group. `loss.backward()` fills `.grad` of the two
heads and the logit scale every step, `optimizer.step()` never touches them: the heads stay at their random
init and the loss stays at its starting value (at or above ln(B)). Nothing errors, because a module that is
not the model is simply never seen by the optimizer. In Simple-Recipe-Distillation#1 a reader noticed that
`self.embed` "seems not updated as it's not included in optimizer"; the author confirmed it was an oversight,
re-ran ImageNet with the projector trained, and posted logs where the trainable projector trains much better
than the frozen (never-updated) one.

Fix (the thread's): hand the loss module's parameters to the optimizer too,
`AdamW(list(model.parameters()) + list(criterion.parameters()), ...)`.

Validation (validate.py, 100 steps, B = 64, ln B = 4.1589; final = mean of the last 5 steps):
fault final / ln(B) = 1.2552 / 1.4417 / 1.1693 on seeds 0 / 1 / 2 (the random heads' starting loss, above
chance: the heads never move); fixed 0.0431 / 0.0434 / 0.0375.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import E, ResamplerAligner, clip_loss, token_pairs

THREADS = ("roymiles/Simple-Recipe-Distillation#1",)
CAUSE = "param_not_in_optimizer"
FAMILY = "frozen parts"

B = 64


class ProjectedClipLoss(nn.Module):
    """CLIP loss with its own projection heads (as `OurDistillationLoss` owns `self.embed`)."""

    def __init__(self, dim: int = E, out: int = 32):
        super().__init__()
        self.image_embed = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, out))
        self.text_embed = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, out))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, image_features, text_features):
        img = F.normalize(self.image_embed(image_features), dim=-1)
        txt = F.normalize(self.text_embed(text_features), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t()
        return clip_loss(logits), img, txt, logits


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(n=2048, seed=seed)
    model = ResamplerAligner()  # the "pretrained" encoders
    model.requires_grad_(False)  # frozen backbone: only the new heads should learn
    criterion = ProjectedClipLoss()
    if fixed:
        optimizer = torch.optim.AdamW(list(model.parameters()) + list(criterion.parameters()), lr=1e-3,
                                      weight_decay=0.01)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        image_features = model.encode_image(tokens[idx])
        text_features = model.text(texts[idx])
        loss, img, txt, logits = criterion(image_features, text_features)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
