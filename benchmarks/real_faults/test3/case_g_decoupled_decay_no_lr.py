"""Decoupled weight decay written by hand next to plain Adam, following the AdamW paper's Algorithm 2 literally:
after each step the weight matrices are shrunk by `p.mul_(1 - wd)` with wd = 0.2 (the value CLIP recipes quote for
torch's AdamW, where the decay is multiplied by the learning rate), biases, norms and the logit scale excluded as
in open_clip. Without the learning-rate factor the matrices lose 20% per step; Adam's steps of ~lr cannot hold
them, they shrink towards lr/wd, the untouched biases take over the projector outputs and every image (and every
caption) embeds in nearly the same direction: the loss goes back to ln(B). Public discussions of exactly this
coupling: "In L2, the weight decay is stored inside the grad variable, which is later multiplied by the learning
rate. This new formulation is not multiplying it by the learning rate" (pytorch/pytorch#4429), and "it should be
p.data.add_(-wd * ScheduleMultiplier, p.data) rather than p.data.add_(-wd * lr, p.data)" (pytorch/pytorch#3740),
with NVIDIA/apex#1849 proposing the fully decoupled `(1 - lambda) w` update.
Thread: pytorch/pytorch#4429 ("This new formulation is not multiplying it by the learning rate");
pytorch/pytorch#3740; NVIDIA/apex#1849.
Fix: `p.mul_(1 - LR * WD)` (the decay scaled by the learning rate, as torch.optim.AdamW does).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1589/4.1589/4.1589 (= 1.000/1.000/1.000 x ln(64) = 4.1589); fixed 0.2054/0.2192/0.1822 (= 0.049/0.053/0.044 x
ln(64) = 4.1589).
Ground truth: weight_decay_collapse.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
from torch import nn
import torch.nn.functional as F
from common import D, DT, E, clip_loss, token_pairs

THREADS = ("pytorch/pytorch#4429", "pytorch/pytorch#3740", "NVIDIA/apex#1849")
CAUSE = "weight_decay_collapse"
FAMILY = "weight_decay"
BATCH = 64
LR, WD = 1e-3, 0.2


class Projector(nn.Module):
    """Frozen-backbone patch tokens -> mean pool -> 2-layer MLP; pooled text features -> 2-layer MLP."""

    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.image(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = Projector()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]  # open_clip: no decay on gains, biases, scale
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
            with torch.no_grad():  # decoupled weight decay, "Algorithm 2"
                for p in decay:
                    p.mul_(1 - LR * WD) if fixed else p.mul_(1 - WD)


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
