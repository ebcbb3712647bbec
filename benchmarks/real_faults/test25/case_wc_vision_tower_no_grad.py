"""`--tune_vision_tower` with a vision-tower wrapper whose forward is decorated `@torch.no_grad()`.

What the user did: LLaVA-style alignment of a vision tower into a frozen language-side space, as a
contrastive objective: a transformers CLIP vision tower and its projection (tiny config, random weights)
are tuned so that each image embedding matches its caption's embedding in the frozen input word-embedding
table of a language model (mean over the caption's tokens; the table stays `requires_grad_(False)`). The
vision side is wrapped in a `CLIPVisionTower` module copied from LLaVA / TinyLLaVA (`feature_select` and a
`forward` decorated with `@torch.no_grad()`), and the script's `tune_vision_tower` switch sets
`requires_grad_(True)` on the wrapper and puts its parameters, with the logit scale, in AdamW. The loss is
CLIP's symmetric InfoNCE.

What went wrong and why: the decorator runs the whole tower under `torch.no_grad()`, whatever the
parameters' `requires_grad` says. The image embeddings come out as tensors with no autograd history; the
only trainable tensor left in the loss graph is the logit scale. Every vision parameter is in the
optimizer with `requires_grad=True`, and its `.grad` stays None at every step, so AdamW skips it; the
frozen word embeddings cannot move either. The image embeddings remain those of the random initial tower,
unrelated to the text space, and the loss stays at or above ln(B) (the logit scale only drifts down to
flatten the softmax). No error or warning is raised: the decorator was written for a frozen tower and the
flag that unfreezes the tower does not touch it.

Threads: TinyLLaVA/TinyLLaVA_Factory#17 (a user fine-tuning the vision encoder with `--tune_vision_tower`
finds the forward decorated with `@torch.no_grad`; the maintainers confirm the released version should
have had it commented out and fix it), haotian-liu/LLaVA#305 (the `torch.no_grad` on
`CLIPVisionTower.forward` stops every gradient through the vision encoder, there the one a user needs at
the input image; the author: an over-cautious decorator added so the encoder is never modified, safe to
remove since the tower already has `requires_grad_(False)`).

Fix (fixed=True): no `@torch.no_grad()` on the tuned tower's forward (the word embeddings stay frozen by
`requires_grad_(False)`), so the vision tower and its projection receive gradients.

Validation (benchmarks/real_faults/validate.py --half test25, B=32, 100 steps, final = mean of last 5
logged losses, ln(32) = 3.4657):
  seed 0: fault 4.1043 (ratio 1.1842), fixed 1.3319 (ratio 0.3843)
  seed 1: fault 4.0649 (ratio 1.1729), fixed 1.2909 (ratio 0.3725)
  seed 2: fault 4.1802 (ratio 1.2062), fixed 1.3541 (ratio 0.3907)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common import E, VOCAB, image_caption_pairs, tiny_clip

THREADS = ("TinyLLaVA/TinyLLaVA_Factory#17", "haotian-liu/LLaVA#305")
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"

B = 32


class CLIPVisionTower(nn.Module):
    """LLaVA-style wrapper: the CLIP vision transformer plus its projection into the shared space."""

    def __init__(self, clip, select_feature: str = "pooled"):
        super().__init__()
        self.vision_tower = clip.vision_model
        self.visual_projection = clip.visual_projection
        self.select_feature = select_feature

    def feature_select(self, outs):
        if self.select_feature == "pooled":
            return outs.pooler_output
        return outs.last_hidden_state[:, 1:].mean(1)

    def _forward(self, images):
        outs = self.vision_tower(pixel_values=images)
        return self.visual_projection(self.feature_select(outs))

    @torch.no_grad()
    def forward(self, images):
        return self._forward(images)


class TunableVisionTower(CLIPVisionTower):
    def forward(self, images):  # the decorator removed
        return self._forward(images)


class LockedTextAligner(nn.Module):
    """Tuned CLIP vision tower -> the frozen word-embedding space of a language model (mean over the caption)."""

    def __init__(self, seed: int, fixed: bool):
        super().__init__()
        clip = tiny_clip(seed)
        self.vision = (TunableVisionTower if fixed else CLIPVisionTower)(clip)
        self.word_embeddings = nn.Embedding(VOCAB, E)  # stands in for the frozen LM's input embedding table
        self.logit_scale = clip.logit_scale

    def encode_text(self, ids):
        return self.word_embeddings(ids).mean(1)

    def forward(self, pixels, ids):
        img = F.normalize(self.vision(pixels), dim=-1)
        txt = F.normalize(self.encode_text(ids), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed=seed)
    model = LockedTextAligner(seed, fixed)
    tune_vision_tower = True
    model.word_embeddings.requires_grad_(False)
    model.vision.requires_grad_(tune_vision_tower)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        img, txt = model(pixels[idx], ids[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        labels = torch.arange(len(logits))
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=len(img), inputs=pixels[idx])
        optimizer.step()
        optimizer.zero_grad()
    session.close()
