"""Two-tower model trained from scratch: a small nn.TransformerEncoder over caption token ids and an
MLP over pixels. I set the learning rate with the SimCLR rule lr = 0.3 * batch_size / 256 (meant for
LARS/SGD) but kept Adam, no warm-up. The loss sits at ln(B) for the whole run.
Thread(s): Lightning-Universe/lightning-bolts#373 ("following the formula from the SimCLR paper, I
should set around 0.3. However, if I do that the validation loss oscillates a lot and end up with a
large loss"); google-research/simclr#141 ("my contrastive loss does not decrease and still around 5"
with batch 128, learning_rate 1e-1). Fix: an Adam-sized learning rate (1e-3).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean loss of the last 12 steps): fault
4.161 / 4.161 / 4.162 (at chance) vs ln(64) = 4.159; fixed 1.919 / 2.110 / 1.912.
Ground truth: learning_rate_too_high.
"""
import math

import torch
import torch.nn.functional as F
from common import IMG, SEQ, VOCAB, E, image_caption_pairs
from torch import nn

THREADS = ("Lightning-Universe/lightning-bolts#373", "google-research/simclr#141")
CAUSE = "learning_rate_too_high"
FAMILY = "optimizer_schedule"
BATCH = 64


class CaptionEncoder(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.randn(SEQ, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(width, E)

    def forward(self, ids):
        h = self.encoder(self.tok(ids) + self.pos)
        return self.head(h[:, -1])  # EOS token


class DualEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Flatten(), nn.Linear(3 * IMG * IMG, 128), nn.GELU(), nn.Linear(128, E))
        self.text = CaptionEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, pixels, ids):
        return F.normalize(self.image(pixels), dim=-1), F.normalize(self.text(ids), dim=-1)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed)
    model = DualEncoder()
    lr = 1e-3 if fixed else 0.3 * BATCH / 256
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    labels = torch.arange(BATCH)

    gen = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(pixels), (BATCH,), generator=gen)
            img, txt = model(pixels[idx], ids[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"contrastive": loss}, embeddings={"image": img, "text": txt},
                      logits=logits, batch_size=BATCH, inputs=pixels[idx])
            opt.step()


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
