"""Plain unit-norm cosine logits with no scale: the softmax over the batch can never become confident.

What the user did: an image->text retrieval model (an image encoder and a text encoder, each with a
projection: here the two towers of a transformers CLIP built from a tiny config, random weights, without
its logit scale) trained with a batch softmax: each image scored against every caption of the batch,
cross-entropy toward its own caption, as in TIRG's batch-based classification loss. TIRG passes both
feature sets through a `NormalizationLayer(normalize_scale=4.0, learn_scale=True)`: L2 normalisation
followed by a learnable scale, so the logits start at 16 x cosine and the scale keeps learning. The user
replaced that layer with a plain `torch.nn.functional.normalize` on both sides ("I wanted to replace it
with torch.nn.functional.normalize") and kept `logits = img @ txt.T`.

What went wrong and why: unit vectors make every logit a cosine in [-1, 1] and nothing scales it, so the
softmax over B=64 candidates stays nearly flat whatever the model does: even with every positive at
cosine 1 and the negatives near 0 the loss is about -1 + ln(e + 63) = 3.2, 0.77 ln(64), and every
probability stays near 1/B, so the gradients the encoders get are small and nearly the same for every
negative. The loss barely leaves chance and retrieval lags the scaled run (R@1 over 512 training pairs
after 100 steps: 0.19 / 0.11 / 0.08 vs 0.22 / 0.24 / 0.23 with the fix). The thread: "the performance
will drop a lot if I set the scale to other number like 1.0"; the maintainer: the scale sets the range of
the logits fed to the softmax, which must be big enough to cover its whole 0-1 output range.

Thread: google/tirg#13 ("Why normalize_scale is set to 4.0?"; lugiavn: "this number affects the range of
the logit value ... the logit value range must be big enough to cover the whole 0-1 output range", 4.0
was found experimentally and can be made learnable; the user: replacing it with
`torch.nn.functional.normalize` "is not as simple as I thought").

Fix (fixed=True): TIRG's `NormalizationLayer(normalize_scale=4.0, learn_scale=True)` on both sides: the
same unit vectors times a learnable scale (logits 16 x cosine at init).

Validation (validate.py, seeds 0/1/2, 100 steps, B=64, final = mean of the last 5 losses, ln(64)=4.159):
fault final/ln(B) = 0.814 / 0.830 / 0.824 (losses 3.385 / 3.450 / 3.428); fixed 0.341 / 0.269 / 0.281
(1.418 / 1.120 / 1.169). About 2 s a run on one CPU thread.

Ground truth: temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from common import image_caption_pairs, tiny_clip
from torch import nn

THREADS = ("google/tirg#13",)
CAUSE = "temperature"
FAMILY = "normalisation and temperature"

B = 64


class NormalizationLayer(nn.Module):
    """TIRG's layer: L2-normalise each row and multiply by a (learnable) scale."""

    def __init__(self, normalize_scale: float = 1.0, learn_scale: bool = True):
        super().__init__()
        self.norm_s = float(normalize_scale)
        if learn_scale:
            self.norm_s = nn.Parameter(torch.FloatTensor((self.norm_s,)))

    def forward(self, x):
        return self.norm_s * x / torch.norm(x, dim=1, keepdim=True).expand_as(x)


class ImageTextRetrieval(nn.Module):
    """An image encoder and a text encoder with projections (the two towers of a transformers CLIP built
    from a tiny config, random weights), trained with a batch softmax; no logit scale of their own."""

    def __init__(self, seed: int, fixed: bool = False):
        super().__init__()
        clip = tiny_clip(seed=seed)
        self.img_model, self.img_proj = clip.vision_model, clip.visual_projection
        self.text_model, self.text_proj = clip.text_model, clip.text_projection
        # TIRG: NormalizationLayer(normalize_scale=4.0, learn_scale=True) on both feature sets
        self.normalization_layer = NormalizationLayer(normalize_scale=4.0, learn_scale=True) if fixed else None

    def norm(self, x):
        if self.normalization_layer is None:
            return F.normalize(x, dim=-1)  # the user's replacement
        return self.normalization_layer(x)

    def forward(self, pixels, input_ids):
        img = self.img_proj(self.img_model(pixel_values=pixels).pooler_output)
        txt = self.text_proj(self.text_model(input_ids=input_ids).pooler_output)
        return self.norm(img), self.norm(txt)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, captions = image_caption_pairs(n=1024, seed=seed)
    model = ImageTextRetrieval(seed, fixed=fixed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    labels = torch.arange(B)
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        img, txt = model(pixels[idx], captions[idx])
        logits = torch.mm(img, txt.transpose(0, 1))  # TIRG's compute_batch_based_classification_loss_
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=pixels[idx])
        optimizer.step()
    session.close()
