"""CLIP fine-tuning on a classification set whose captions are built from the class name ("a photo of a
{class}"): with 5 classes and a batch of 64, every caption appears ~13 times per batch, and the diagonal
targets score the other 12 identical captions (and their images) as negatives. Identical captions have
identical embeddings, so no model can tell them apart: the loss cannot go below ln(#copies) ~ ln(13) = 2.5.

Threads: OFA-Sys/Chinese-CLIP#378 ("when there are fewer classes than the batch size, the same text label
appears several times in a batch; should the targets of the same text for different images be set to 1?"),
OFA-Sys/Chinese-CLIP#111 (same text with two images in one batch is treated as a negative pair),
moein-shariatnia/OpenAI-CLIP#11 ("contrastive loss tries to pull their embeddings apart, which is not what we
want"). Fix: count every item with the same caption as a positive (multi-positive InfoNCE, UniCL-style).
Model: nn.TransformerEncoder caption tower over token ids, MLP image tower over mean-pooled patch tokens.

Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean over the last 12 steps): fault CLIP loss
2.686 / 2.621 / 2.621 vs ln(64) = 4.159, i.e. stuck at its floor ln(#copies) (~ln 13 = 2.56), never reaching
0.5 ln B = 2.08; fixed (multi-positive loss) 0.039 / 0.006 / 0.004. What the model ranks is the same either way
(in-batch top-1 caption of the right class 0.975 / 0.995 / 0.999 fault, 0.973 / 0.997 / 0.999 fixed): the
fault is a loss that cannot fall, as in the threads, not a worse ranking.
Ground truth: false_negatives.
"""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/real_faults (common.py)

import torch
import torch.nn.functional as F
from torch import nn

from common import D, T, clip_loss

THREADS = ("OFA-Sys/Chinese-CLIP#378", "OFA-Sys/Chinese-CLIP#111", "moein-shariatnia/OpenAI-CLIP#11")
CAUSE = "false_negatives"
FAMILY = "batch_candidates"
BATCH = 64
CLASSES = 5
VOCAB, LEN, E = 32, 7, 32


def class_dataset(n: int, seed: int):
    """Patch tokens of images of CLASSES classes (class prototype + per-image variation) and the class caption
    "<bos> a photo of a <class> <eos>" as token ids."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, CLASSES, (n,), generator=g)
    protos = torch.randn(CLASSES, 8, generator=g)
    z = protos[cls] + 0.5 * torch.randn(n, 8, generator=g)
    tokens = (z @ torch.randn(8, D, generator=g)).unsqueeze(1) + 0.5 * torch.randn(n, T, D, generator=g)
    template = torch.tensor([1, 2, 3, 4, 2, 0, 31])           # <bos> a photo of a <class> <eos>
    ids = template.repeat(n, 1)
    ids[:, 5] = 10 + cls                                      # the class word
    return tokens, ids, cls


class TextTower(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, E)
        self.pos = nn.Parameter(0.02 * torch.randn(LEN, E))
        layer = nn.TransformerEncoderLayer(E, nhead=2, dim_feedforward=2 * E, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, num_layers=1)
        self.proj = nn.Linear(E, E)

    def forward(self, ids):
        return self.proj(self.enc(self.emb(ids) + self.pos).mean(1))


class Clip(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = TextTower()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, ids):
        return F.normalize(self.image(tokens.mean(1)), dim=-1), F.normalize(self.text(ids), dim=-1)


def multi_positive(logits, pos):
    """-log of the softmax mass on all positives of each row."""
    return (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~pos, float("-inf")), 1)).mean()


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    tokens, ids, cls = class_dataset(1024, seed)
    torch.manual_seed(seed)
    model = Clip()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, ids, cls), batch_size=BATCH,
                                         shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, cap, c in loader:
                if step >= steps:
                    break
                img, txt = model(tok, cap)
                logits = model.logit_scale.exp() * img @ txt.t()
                if fixed:
                    pos = c[:, None] == c[None, :]            # same caption = positive
                    loss = 0.5 * (multi_positive(logits, pos) + multi_positive(logits.t(), pos))
                else:
                    loss = clip_loss(logits)                  # diagonal only: 12 identical captions as negatives
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=tok)
                opt.step()
                opt.zero_grad()
                step += 1


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
