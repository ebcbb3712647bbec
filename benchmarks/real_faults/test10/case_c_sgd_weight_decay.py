"""SGD with momentum 0.9, lr 0.05, the usual "no decay on biases" parameter groups, and a weight decay of 0.5 on
the weight matrices (a value copied from a config where it meant something else). Once momentum builds up the
decay takes up to ~25% of each weight matrix per step; the matrices of both towers shrink toward 0, every
embedding becomes the last layer's (undecayed) bias, and the loss ends exactly at ln(B) (mean pairwise cosine
of the image rows: 0.19 at step 5, 0.37 at step 20, 0.99998 at step 99, seed 0).
Threads: Joker316701882/Additive-Margin-Softmax#16 ("when i set weight-decay, No matter what parameter, learning
rate and optimizer I set, it will behave baddly"; "I fix the bugs about weight decay on last fc layer");
jiaweizzhao/signSGD-with-Majority-Vote#4 ("The weight decay of SGD in training was set to --weight-decay 0.1, but
not 1e-4, why?").
Fix: `wd = 5e-4` instead of 0.5.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.159/4.159/4.159 (= 1.000/1.000/1.000 ln(64), ln(64) = 4.159); fixed 0.038/0.064/0.055 (= 0.009/0.015/0.013 ln(64)).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss
import math

THREADS = ("Joker316701882/Additive-Margin-Softmax#16", "jiaweizzhao/signSGD-with-Majority-Vote#4")
CAUSE = "weight_decay_collapse"
FAMILY = "regularisation"
BATCH = 64


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.vision = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.vision(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner()
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]          # no decay on biases / scale
    no_decay = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    wd = 5e-4 if fixed else 0.5                      # the fix: a weight decay of 5e-4 instead of 0.5
    opt = torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
