"""A user adapts CLIP fine-tuning to a labelled dataset (10 classes, a caption per image) and, since the dataset
already returns a `label` per item, feeds those class ids to the cross-entropy over the (B, B) image-text logit
matrix. The targets of a CLIP loss are column indices inside the batch (the matching caption is on the diagonal), not
class ids: with class ids every image is told its caption is the one at position `label` of the batch, an unrelated
item, and the loss cannot fall below chance. The thread asks exactly how to set the targets in this situation: "If
I pass in a 32 batch of images and 10 unique labels, I don't know what the loss function would be. Because in Clip's
approach for each image, there's a unique text-image pairing."
Thread: openai/CLIP#411 ("If I pass in a 32 batch of images and 10 unique labels, I don't know what the loss
function would be").
Fix: `labels = torch.arange(len(logits))` (the pair index) instead of the dataset's class ids.
Validated without the tool (seeds 0,1,2; 80 steps; batch 32; final = mean of the last 5 steps): fault final loss
3.486/3.537/3.522 (= 1.01/1.02/1.02 ln(B), ln(32) = 3.466); fixed 0.061/0.078/0.058 (= 0.02/0.02/0.02 ln(B), ln(32) = 3.466).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math

import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs

THREADS = ("openai/CLIP#411",)
CAUSE = "wrong_targets"
FAMILY = "data_labels"
BATCH = 32


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.visual(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    class_ids = (texts @ torch.randn(DT, 10, generator=torch.Generator().manual_seed(seed))).argmax(1)
    model = Aligner()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    perm = torch.randperm(len(tokens))
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            start = (step * BATCH) % (len(tokens) - BATCH)
            idx = perm[start:start + BATCH]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            labels = torch.arange(len(logits)) if fixed else class_ids[idx]
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      targets=labels, batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
