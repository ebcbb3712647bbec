"""A labelled dataset yields (image, caption, category) and the training loop, adapted from a classification
script, passes the category ids as the targets of the in-batch CLIP logits: `F.cross_entropy(logits_per_image,
category[idx])`. Those ids (0..9) point at columns 0..9 of a 64x64 image-caption matrix, i.e. at whichever captions
happened to be sampled first, never at the caption paired with the image (column i). Nothing consistent can be
learned and the loss stays at or above ln(B). The CLIP authors on fine-tuning: "You'll want to use the softmax cross
entropy with the correct pairing (i.e. the identity matrix) as the target."; users keep asking why the targets are
`arange` ("why using np.arange(n) rather than one-hot as labels?", "why are the ground truths calculated like this
and how are they ground truth ?").
Thread: openai/CLIP#3 ("use the softmax cross entropy with the correct pairing (i.e. the identity matrix) as the
target"); openai/CLIP#301 ("why using np.arange(n) rather than one-hot as labels?"); ABaldrati/CLIP4Cir#19
("ground_truth = torch.arange(images_in_batch, ...) why are the ground truths calculated like this").
Fix: `ground_truth = torch.arange(BATCH)`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.3516/4.2857/4.3170 (= 1.046/1.031/1.038 ln(64)); fixed 0.1013/0.1259/0.0878 (0.024/0.030/0.021 ln(64)).
Ground truth: wrong_targets.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs

THREADS = ("openai/CLIP#3", "openai/CLIP#301", "ABaldrati/CLIP4Cir#19")
CAUSE = "wrong_targets"
FAMILY = "loss_function"
BATCH = 64
CLASSES = 10


def dataset(seed: int):
    """Pairs plus the category id each caption came with (a labelled dataset: 10 categories)."""
    tokens, texts = token_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    category = (texts @ torch.randn(texts.shape[1], CLASSES, generator=g)).argmax(1)
    return tokens, texts, category


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.txt = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.img(tokens.mean(1)), dim=-1), F.normalize(self.txt(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts, category = dataset(seed)
    model = Aligner()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens))[:BATCH]
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits_per_image = scale * img @ txt.t()
            ground_truth = category[idx]                       # the bug: the dataset's class ids as targets
            if fixed:
                ground_truth = torch.arange(BATCH)             # the fix: image i matches caption i of the batch
            loss = 0.5 * (F.cross_entropy(logits_per_image, ground_truth)
                          + F.cross_entropy(logits_per_image.t(), ground_truth))
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits_per_image,
                      batch_size=BATCH, targets=ground_truth, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
