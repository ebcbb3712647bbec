"""A VSE-style caption encoder (word embeddings -> nn.LSTM -> state at the last token) beside the vision tower
of a transformers CLIP built from a tiny config: the LSTM is created without `batch_first=True` while the
captions are fed batch-first, so the recurrence runs across the batch and the caption embedding stops
depending on the caption. The CLIP loss sits at ln(B) from the first step to the last.

What the user did: yunjey/pytorch-tutorial#196 took the tutorial's LSTM (images reshaped to
`(batch, seq_len, input_size)`, `nn.LSTM(..., batch_first=True)`, classifier on `out[:, -1, :]`) and changed
only `batch_first=True` to `False`; "both loss (about 2) and accuracy (about 11.35%) is not good" (chance on
MNIST). Here the same three lines encode captions: `nn.LSTM(WIDTH, WIDTH)` with the default layout, token
ids embedded as `(batch, seq, width)`, `out[:, -1, :]` taken as the caption's last-token state.

What went wrong and why: with the default `batch_first=False` nn.LSTM reads its input as
`(seq_len, batch, feature)`, so a `(B, SEQ, W)` tensor is taken as a sequence of B steps over a "batch" of SEQ
positions (the answer in #195, on the same tutorial's layout: "in default batch_first = False. That's the
reason."). The
recurrence therefore runs over the samples of the batch (each sample's state depends on the samples before
it), and `out[:, -1, :]` picks, at every step b, the stream made of the last token of every caption. Every
caption ends with the same EOS token, so that stream is one repeated input and the caption embedding of row
b is a function of b alone (identical for any two batches): nothing in it can match an image, the gradient
carries no pairing signal, and the loss stays at ln(B).

The fix: `nn.LSTM(WIDTH, WIDTH, batch_first=True)` (equivalently, transpose the input to
`(seq, batch, feature)`), so the recurrence runs along each caption and `out[:, -1, :]` is its EOS state.

Validation (validate.py, 100 steps, B = 64, chance ln(B) = 4.159; final loss / ln(B)):
    seed 0: fault 1.000, fixed 0.363
    seed 1: fault 1.000, fixed 0.287
    seed 2: fault 1.000, fixed 0.282

Ground truth: pooling_axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common import E, VOCAB, clip_loss, image_caption_pairs, tiny_clip

THREADS = ("yunjey/pytorch-tutorial#196", "yunjey/pytorch-tutorial#195")
CAUSE = "pooling_axis"
FAMILY = "architecture"

B = 64
WIDTH = 32


class CaptionEncoder(nn.Module):
    """Word embeddings -> LSTM -> state at the last token (EOS) -> projection into the joint space."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.lstm = nn.LSTM(WIDTH, WIDTH, num_layers=1, batch_first=batch_first)
        self.proj = nn.Linear(WIDTH, E)

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids))
        return self.proj(out[:, -1, :])


class ImageCaptionModel(nn.Module):
    def __init__(self, seed: int, batch_first: bool):
        super().__init__()
        clip = tiny_clip(seed=seed, width=WIDTH)
        self.vision = clip.vision_model
        self.visual_projection = clip.visual_projection
        self.logit_scale = clip.logit_scale
        self.captions = CaptionEncoder(batch_first)

    def forward(self, pixels, ids):
        img = self.visual_projection(self.vision(pixel_values=pixels).pooler_output)
        txt = self.captions(ids)
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(n=2048, seed=seed)
    model = ImageCaptionModel(seed, batch_first=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    session = watch(model, optimizer, batch_size=B)
    g = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        idx = torch.randint(0, len(ids), (B,), generator=g)
        img, txt = model(pixels[idx], ids[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B)
        optimizer.step()
    session.close()
