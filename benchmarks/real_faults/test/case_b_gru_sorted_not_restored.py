"""Caption encoder sorts the batch by length for `pack_padded_sequence` and never restores the order: the text
embeddings come back in length order while the image embeddings stay in batch order, so row i of the logit
matrix compares image i with some other item's caption, and the loss stays at ln(B).

Threads: fartashf/vsepp#36 ("I was sorting but then not getting the sort back ... embeddings in a batch seemed
to be mixed up"), pytorch/pytorch#4927 ("sort A -> feed into RNN -> unsort A ... This will cause some
mismatches"). Fix: put the rows back, `text = text[order.argsort()]` (or `enforce_sorted=False`).
Model: GRU caption encoder over token ids of variable length, MLP image encoder over pixels, AdamW.

Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean loss over the last 12 steps): fault
4.170 / 4.166 / 4.168 vs ln(64) = 4.159 (fails outright); fixed 1.415 / 1.410 / 1.364.
Ground truth: misaligned_pairs.
"""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/real_faults (common.py)

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from common import IMG, SEQ, VOCAB, clip_loss, image_caption_pairs

THREADS = ("fartashf/vsepp#36", "pytorch/pytorch#4927")
CAUSE = "misaligned_pairs"
FAMILY = "data_labels"
BATCH = 64


class CaptionGRU(nn.Module):
    def __init__(self, fixed: bool, dim: int = 32, out: int = 32):
        super().__init__()
        self.fixed = fixed
        self.emb = nn.Embedding(VOCAB, dim, padding_idx=0)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.proj = nn.Linear(dim, out)

    def forward(self, ids, lengths):
        lengths, order = lengths.sort(descending=True)       # pack_padded_sequence wants decreasing lengths
        packed = pack_padded_sequence(self.emb(ids[order]), lengths, batch_first=True)
        _, h = self.gru(packed)
        text = self.proj(h[-1])                               # rows in length order
        if self.fixed:
            text = text[order.argsort()]                      # back to batch order
        return F.normalize(text, dim=-1)


class TwoTower(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.image = nn.Sequential(nn.Flatten(), nn.Linear(3 * IMG * IMG, 64), nn.GELU(), nn.Linear(64, 32))
        self.text = CaptionGRU(fixed)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, pixels, ids, lengths):
        return F.normalize(self.image(pixels), dim=-1), self.text(ids, lengths)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    pixels, ids = image_caption_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, SEQ + 1, (len(ids),), generator=g)   # captions of 5..8 tokens, 0-padded
    ids = ids.masked_fill(torch.arange(SEQ)[None, :] >= lengths[:, None], 0)
    torch.manual_seed(seed)
    model = TwoTower(fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels, ids, lengths), batch_size=BATCH,
                                         shuffle=True, drop_last=True, generator=g)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for px, tok, n in loader:
                if step >= steps:
                    break
                img, txt = model(px, tok, n)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=px)
                opt.step()
                opt.zero_grad()
                step += 1


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
