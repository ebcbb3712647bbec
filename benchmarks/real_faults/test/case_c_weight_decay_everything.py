"""I train MLP projectors on frozen (cached) backbone features with AdamW, lr 1e-2 and a strong
weight decay of 1.0 passed as `AdamW(model.parameters(), ...)`, so the decay also hits the learnable
log temperature, the LayerNorm gains and the biases. The log logit scale is pulled towards 0 (scale
towards 1) and the loss flattens far above where the same run without decay on them ends. Thread(s):
mlfoundations/open_clip#815 ("the logit_scale ... starts from the 14.28(1/0.07) and then just goes
down and towards the end of the training it reaches 1 ... the loss becomes constant ... I use adamw
optimizer ... weight decay is 0.1"); workofart/ml-by-hand#88 ("LayerNorm gains start at 1.0, so
decaying them toward 0 is silent ablation rather than regularization"); EvolvingLMMs-Lab/OneVision-Encoder#66
("The current training applies weight_decay=0.05 to ALL parameters"). Fix (open_clip's): two param
groups, no decay on parameters with fewer than 2 dims (logit scale, gains, biases).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean of the last 5 losses): fault 0.708,
0.668, 0.727 vs ln(B) = 4.159 (learns worse: ~10x the fixed loss; log logit scale 2.66 -> 1.8);
fixed 0.077, 0.061, 0.064 (log logit scale -> 2.85).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # so `python case.py` finds common
import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("mlfoundations/open_clip#815", "workofart/ml-by-hand#88", "EvolvingLMMs-Lab/OneVision-Encoder#66")
CAUSE = "weight_decay_collapse"
FAMILY = "weight_decay"
BATCH = 64


class Projectors(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 128), nn.GELU(), nn.Linear(128, E))
        self.text = nn.Sequential(nn.LayerNorm(DT), nn.Linear(DT, 128), nn.GELU(), nn.Linear(128, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, feats, texts):
        return F.normalize(self.image(feats), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    tokens, texts = token_pairs(2048, seed=seed)
    feats = tokens.mean(1)  # pooled features from the frozen backbone, cached once
    torch.manual_seed(seed)
    model = Projectors()
    params = list(model.parameters())
    if fixed:
        params = [{"params": [p for p in params if p.ndim >= 2]},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=1.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(feats), (BATCH,), generator=g)
            img, txt = model(feats[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=feats[idx])
            opt.step(); opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
