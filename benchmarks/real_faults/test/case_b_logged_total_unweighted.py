"""Two-term objective (CLIP loss + 0.4 x an auxiliary caption-word loss) where the number logged as the total
is the plain sum of the terms: the backward uses `clip + 0.4 * words`, the log says `clip + words`. The
training is fine; the curve a user reads (and compares across runs or against ln(B)) is not the objective.

Threads: open-mmlab/mmsegmentation#802 ("the auxiliary loss and decoder loss weights are 0.4 and 1.0 ... so the
total loss = 0.4*auxiliary loss + 1.0*decoder loss? But my model output loss = auxiliary loss + decoder loss,
without considering the loss weight"), mahyarnajibi/SSH#16 ("The total loss doesn't equal to the sum of all
loss when training"). Fix: log the value that is back-propagated (`total = loss`).
Model: a tiny transformers CLIPModel (random weights) with a linear bag-of-words head on the image embedding
(multi-label BCE over the caption's tokens), AdamW.

Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean over the last 12 steps): training is the
same with and without the fix (CLIP loss 1.925 / 1.547 / 1.796 vs ln(64) = 4.159, words 0.643 / 0.651 / 0.642);
the logged total is 2.568 / 2.198 / 2.438 while the optimised objective is 2.182 / 1.808 / 2.052 (0.39 = 0.6 x
the words term too high); fixed: logged total = objective.
Ground truth: logging_misstates_loss.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/real_faults (common.py)

import torch
import torch.nn.functional as F
from torch import nn

from common import E, VOCAB, image_caption_pairs, tiny_clip

THREADS = ("open-mmlab/mmsegmentation#802", "mahyarnajibi/SSH#16")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH = 64
WEIGHTS = {"clip": 1.0, "words": 0.4}


class ClipWithWordHead(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        self.clip = tiny_clip(seed=seed)
        self.words = nn.Linear(E, VOCAB)                      # predicts which tokens the caption contains

    def forward(self, pixels, ids):
        out = self.clip(input_ids=ids, pixel_values=pixels)
        return out, self.words(out.image_embeds)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    pixels, ids = image_caption_pairs(1024, seed=seed)
    bags = torch.zeros(len(ids), VOCAB).scatter_(1, ids, 1.0)
    model = ClipWithWordHead(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels, ids, bags), batch_size=BATCH,
                                         shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for px, tok, bag in loader:
                if step >= steps:
                    break
                out, word_logits = model(px, tok)
                logits = out.logits_per_image
                labels = torch.arange(len(logits))
                clip = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
                words = F.binary_cross_entropy_with_logits(word_logits, bag)
                loss = WEIGHTS["clip"] * clip + WEIGHTS["words"] * words
                loss.backward()
                total = loss if fixed else clip + words       # what goes into the log as "total"
                w.observe(step, losses={"clip": clip, "words": words, "total": total}, weights=WEIGHTS,
                          embeddings={"image": out.image_embeds, "text": out.text_embeds}, logits=logits,
                          batch_size=BATCH, inputs=px)
                opt.step()
                opt.zero_grad()
                step += 1


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
