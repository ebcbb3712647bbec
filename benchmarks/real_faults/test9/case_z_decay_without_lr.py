"""A user wants the CLIP recipe's decoupled weight decay (0.2) on the projection matrices only (no decay on
biases and the logit scale, as open_clip does), so keeps plain Adam and applies the decay by hand after
each step, reading the AdamW paper's update "theta <- theta - eta_t * lambda * theta" with eta_t as the
schedule multiplier (1 here) and not the learning rate. The same reading is discussed in the threads:
TF-Addons' DecoupledWeightDecayExtension "substracted with **weight decay** only, not
**learning_rate * weight_decay**", and neural-fortran's "lambda theta_{t-1} multiplied by the schedule
multiplier eta_t, but *not* the learning rate". With lambda = 0.2 every matrix is shrunk by 20% per step
while Adam's steps are ~1e-3: the projection weights decay to ~zero within a few dozen steps, the
embeddings become the (shared) biases, every row is identical and the loss sits at ln(B).
Thread: tensorflow/addons#2282 ("the variable is substracted with **weight decay** only, not
**learning_rate * weight_decay**"); modern-fortran/neural-fortran#152 ("multiplied by the schedule
multiplier eta_t, but *not* the learning rate alpha").
Fix: p.mul_(1 - LR * WD) (decay scaled by the learning rate, as torch.optim.AdamW does).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final
loss 4.1589/4.1589/4.1589 (= 1.000 ln(64), rows identical); fixed 0.1464/0.1283/0.1818 (0.035/0.031/0.044
ln(64)).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, clip_loss, D, DT, E

THREADS = ("tensorflow/addons#2282", "modern-fortran/neural-fortran#152")
CAUSE = "weight_decay_collapse"
FAMILY = "regularisation"
BATCH = 64
WD, LR = 0.2, 1e-3


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.image(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = Aligner()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    decay = [p for p in model.parameters() if p.ndim >= 2]   # no decay on biases and logit_scale (open_clip)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()
            with torch.no_grad():                                   # decoupled weight decay (AdamW paper)
                for p in decay:
                    p.mul_(1 - LR * WD if fixed else 1 - WD)


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
