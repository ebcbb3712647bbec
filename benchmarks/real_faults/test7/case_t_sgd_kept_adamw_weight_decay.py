"""The run was moved from AdamW to SGD with momentum (lr 0.2; MoCo-style SGD) but kept the AdamW
recipe's `weight_decay=0.1`. AdamW decays by lr*wd = 1e-4 of the weight per step; SGD's coupled decay takes lr*wd =
0.02 per step, amplified about 10x by momentum, on every parameter including the log logit scale. Measured on seed 0
at the end: weight matrices 15-20x smaller than in the fixed run (e.g. img.2.weight norm 0.87 vs 18.75), logit scale
decayed from ln(14.3) = 2.66 to 0.98 (vs 5.0 in the fixed run); the loss dips (1.2 at step 30) and is decayed back
to ln(B), with a spike (9.9 at step 50), and ends at chance. The 3detr author: "Adam and AdamW differ in the way weight
decay is handled. In AdamW, the weight decay is only proportional to the weight itself ... So, weight decay values
will look significantly different across Adam and AdamW."
Thread: facebookresearch/3detr#26 ("weight decay values will look significantly different across Adam and AdamW");
TransformerLensOrg/TransformerLens#81 ("Weight decay in Adam is implemented badly, so use AdamW instead").
Fix: `wd = 1e-4` (SGD's own value) in `torch.optim.SGD(..., weight_decay=wd)`.
Validated without the tool (seeds 0,1,2; 120 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1396/4.1589/5.1334 (= 0.995/1.000/1.234 ln(64)); fixed 0.0055/0.0056/0.0029 (0.001/0.001/0.001 ln(64)).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss

THREADS = ("facebookresearch/3detr#26", "TransformerLensOrg/TransformerLens#81")
CAUSE = "weight_decay_collapse"
FAMILY = "regularisation"
BATCH = 64
LR = 0.2
WD = 0.1   # kept from the AdamW recipe when the optimizer was switched to SGD


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.txt = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.img(tokens.mean(1)), dim=-1), F.normalize(self.txt(texts), dim=-1)


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner()
    wd = 1e-4 if fixed else WD                                 # the fix: SGD's own value (MoCo: 1e-4)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=wd)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens))[:BATCH]
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": scale})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
