"""To halve memory the whole dual encoder is cast with `.half()` and trained with a plain `torch.optim.Adam`
(default eps=1e-8), no AMP, no fp32 master weights. In float16 eps rounds to 0 and the second-moment
estimate of small gradients underflows to 0, so Adam divides by zero on the first update: weights go
inf/NaN and every loss after step 0 is NaN. Threads: afiaka87/glide-finetune#5 ("the adam optimizer by
pytorch does has some weird behavior on float16 precision where it produces nans probably because of a
divide by 0 error"; fixed in #6 by eps=1e-4), pytorch/pytorch#8860 ("NaN loss when using half precision"
- "This worked for me only with changing eps=1e-4"). The fix: `Adam(..., eps=1e-4)` (better still: fp32
weights under autocast).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64): fault loss NaN from step 1 on every seed
(step 0: 6.57/5.70/6.94) vs ln(64) = 4.159; fixed final loss (mean of the last 5 steps) 0.13/0.14/0.14.
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math

import torch
import torch.nn.functional as F
from common import DT, D, E, token_pairs
from torch import nn

THREADS = ("afiaka87/glide-finetune#5", "pytorch/pytorch#8860")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64


class HalfCLIP(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D, 128), nn.GELU(), nn.Linear(128, E))
        self.text = nn.Sequential(nn.Linear(DT, 128), nn.GELU(), nn.Linear(128, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = F.normalize(self.image(tokens.mean(1)), dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        return img, txt, self.logit_scale.exp() * img @ txt.t()


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    tokens, texts = tokens.half(), texts.half()
    model = HalfCLIP().half()
    # the fault: the default eps=1e-8 is 0 in fp16
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4 if fixed else 1e-8)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(BATCH)
    with watch(model, opt, batch_size=BATCH) as w:
        step = 0
        for epoch in range(math.ceil(steps * BATCH / len(tokens))):
            perm = torch.randperm(len(tokens), generator=g)
            for i in range(0, len(tokens) - BATCH + 1, BATCH):
                if step >= steps:
                    break
                idx = perm[i:i + BATCH]
                img, txt, logits = model(tokens[idx], texts[idx])
                logits32 = logits.float()
                loss = (F.cross_entropy(logits32, labels) + F.cross_entropy(logits32.t(), labels)) / 2
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, targets=labels)
                opt.step()
                step += 1


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
