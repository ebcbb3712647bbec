"""A bidirectional GRU caption encoder whose final hidden state is flattened with `.view(batch, -1)`:
every text embedding is built from other captions' states, so no caption ever meets its own image.

What the user did: an image-caption alignment model in plain PyTorch. Images (pixels from
`common.image_caption_pairs`) are cut into 4x4 patches, embedded and mean-pooled; captions are token ids
encoded by a bidirectional GRU (batch_first=True), the way timbmg/Sentence-VAE's encoder does it: the GRU's
final hidden state `h_n` (num_layers * num_directions, batch, hidden) is flattened for the projection with
`hidden.view(batch_size, hidden_size * hidden_factor)`. CLIP loss, learnable logit scale, AdamW, batch 64.

What went wrong and why: `batch_first=True` only applies to the GRU's *output*; `h_n` keeps the batch in
its second axis. `.view(B, 2H)` on a (2, B, H) tensor reads memory in order, so row r of the result is
[forward state of caption 2r, forward state of caption 2r+1] for r < B/2 and the backward states of captions
2r-B, 2r-B+1 after that: row r is built from two *other* samples of the batch (only rows 0 and B-1 contain
their own caption). The rows are then paired with image r by the contrastive targets, so the text side of
every pair is a different, shuffled caption: samples are mixed across the batch axis and the loss has no
pair structure to learn; it stays at ln(B). The reporter of timbmg/Sentence-VAE#15 found exactly this line
("I think the second dimension of hidden is batch, not the first one") and a commenter showed with a toy
tensor that `t.view(3, 8)` of a (2, 3, 4) hidden state interleaves the batch rows; #20 reports the same
batch/direction mix-up at the decoder's unflatten.

Fix (the thread's): move the batch axis first before flattening,
`hidden.transpose(0, 1).reshape(batch_size, -1)` (or `torch.cat([h_n[0], h_n[1]], dim=1)`).

Validation (validate.py, 100 steps, B = 64, ln B = 4.1589; final = mean of the last 5 steps):
fault final / ln(B) = 0.9994 / 0.9998 / 1.0006 on seeds 0 / 1 / 2; fixed 0.1195 / 0.1246 / 0.1067.

Ground truth: pooling_axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import IMG, VOCAB, clip_loss, image_caption_pairs

THREADS = ("timbmg/Sentence-VAE#15", "timbmg/Sentence-VAE#20")
CAUSE = "pooling_axis"
FAMILY = "architecture"

B = 64
E = 32  # shared embedding


class PatchImageEncoder(nn.Module):
    def __init__(self, patch: int = 4, width: int = 64):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(3 * patch * patch, width)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(width, width))
        self.proj = nn.Linear(width, E)

    def forward(self, pixels):
        p = self.patch
        x = pixels.unfold(2, p, p).unfold(3, p, p)  # (B, 3, H/p, W/p, p, p)
        x = x.permute(0, 2, 3, 1, 4, 5).reshape(len(pixels), -1, 3 * p * p)
        x = self.mlp(self.embed(x)).mean(1)
        return self.proj(x)


class GRUCaptionEncoder(nn.Module):
    """Sentence-VAE style encoder: embedding -> bidirectional GRU -> final hidden state -> linear."""

    def __init__(self, embedding_size: int = 32, hidden_size: int = 64, fixed: bool = False):
        super().__init__()
        self.hidden_size, self.hidden_factor, self.fixed = hidden_size, 2, fixed
        self.embedding = nn.Embedding(VOCAB, embedding_size)
        self.encoder_rnn = nn.GRU(embedding_size, hidden_size, num_layers=1, bidirectional=True, batch_first=True)
        self.hidden2emb = nn.Linear(hidden_size * self.hidden_factor, E)

    def forward(self, ids):
        batch_size = ids.size(0)
        _, hidden = self.encoder_rnn(self.embedding(ids))  # hidden: (2, batch, hidden_size)
        if self.fixed:
            hidden = hidden.transpose(0, 1).reshape(batch_size, self.hidden_size * self.hidden_factor)
        else:  # flatten hidden state (as in Sentence-VAE's model.py)
            hidden = hidden.view(batch_size, self.hidden_size * self.hidden_factor)
        return self.hidden2emb(hidden)


class DualEncoder(nn.Module):
    def __init__(self, fixed: bool = False):
        super().__init__()
        self.image = PatchImageEncoder()
        self.text = GRUCaptionEncoder(fixed=fixed)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, pixels, ids):
        return F.normalize(self.image(pixels), dim=-1), F.normalize(self.text(ids), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, captions = image_caption_pairs(n=2048, seed=seed)
    assert pixels.shape[-1] == IMG
    model = DualEncoder(fixed=fixed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        img, txt = model(pixels[idx], captions[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=pixels[idx].flatten(1))
        optimizer.step()
    session.close()
