"""Weight decay given as a keep factor: the training config was ported from a framework whose optimizer takes a
multiplicative decay factor close to 1 (mxnet's Adam had `decay_factor=(1 - 1e-8)` next to `wd`), and the value
0.9999 ends up in torch.optim.SGD's `weight_decay`, which is the rate: every step adds 0.9999*w to the gradient,
amplified ~10x by momentum 0.9. With L2-normalised embeddings nothing in the loss resists a uniform shrink, so the
projection weights and the log logit scale are pulled towards zero faster than the contrastive gradient can shape
them: the embeddings lose their pair structure and the temperature parameter decays with everything else, and the
loss stays far from the fixed run's. The intended rate is 1 - 0.9999 = 1e-4.
Thread: apache/mxnet#3166 ("decay_factor=(1 - 1e-8) ... instead of using decay_factor, Adam:update use wd to decay
updating weight. I get confused here"); vladfi1/slippi-ai#23 (adding weight decay: "Preliminary results show this
having very negative results on loss. Going to enqueue another with much more gradual decay").
Fix: `weight_decay=1e-4` (the rate, 1 - 0.9999) in the SGD optimizer.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
2.763/2.920/3.267 (= 0.664/0.702/0.786 x ln(B), ln(B) = 4.159); fixed 0.017/0.019/0.047 (= 0.004/0.005/0.011 x ln(B), ln(B) = 4.159).
Measured at the end of the fault runs: first/last projection weight norms 4.65/3.21 at init -> 0.50-0.84, log
logit scale 2.659 -> 0.66-0.91; in the fixed runs the same norms grow to 6.2-6.9 and the log scale to ~4.2-4.3.
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, clip_loss, D, DT, E

THREADS = ("apache/mxnet#3166", "vladfi1/slippi-ai#23")
CAUSE = "weight_decay_collapse"
FAMILY = "regularisation"
BATCH = 64
CONFIG = {"lr": 0.05, "momentum": 0.9, "decay": 0.9999}   # "decay": a keep factor in the source framework


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.img_proj = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.txt_proj = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.img_proj(tokens.mean(1)), dim=-1), F.normalize(self.txt_proj(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = Aligner()
    opt = torch.optim.SGD(model.parameters(), lr=CONFIG["lr"], momentum=CONFIG["momentum"],
                          weight_decay=1 - CONFIG["decay"] if fixed else CONFIG["decay"])
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=len(img))
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
