"""The dual encoder builds its two towers (an attention-pooling image head over the patch tokens and an MLP
text head) in a loop and keeps them in a plain Python list, `self.towers = [...]`. nn.Module does not look inside
lists: the towers' parameters are not in `model.parameters()`, so `torch.optim.Adam(model.parameters())` only holds
the logit scale. The towers still get gradients on every backward (their tensors require grad) but no optimizer
ever steps them; the frozen random towers give a loss at or above ln(B) while the logit scale drifts. "The
parameters of `nn.Linear` in the for-loop are not included in `parameters`"; "as soon as you add any module to a
python list the parameters of that module get invisible and hence can't be seen by the optimizer".
Thread: pytorch/pytorch#715 ("wrap them in `nn.ModuleList` and assign that as `self.hids`. This will register them
properly"); pytorch/pytorch#666 ("nn.Module does not look for parameters inside lists"); pytorch/pytorch#38639
("can't be seen by the optimizer").
Fix: `self.towers = nn.ModuleList(towers)`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
6.6728/5.1386/6.7342 (= 1.60/1.24/1.62 ln(64)); fixed 0.1292/0.1559/0.1564 (0.031/0.037/0.038 ln(64)).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss

THREADS = ("pytorch/pytorch#715", "pytorch/pytorch#666", "pytorch/pytorch#38639")
CAUSE = "param_not_in_optimizer"
FAMILY = "architecture"
BATCH = 64


class AttnPool(nn.Module):
    """One learned query attending over the patch tokens."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.proj = nn.Linear(dim, out)

    def forward(self, x):
        pooled, _ = self.attn(self.query.expand(len(x), -1, -1), x, x)
        return self.proj(pooled[:, 0])


class DualEncoder(nn.Module):
    def __init__(self, fixed: bool = False):
        super().__init__()
        towers = [AttnPool(D, E), nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))]
        self.towers = nn.ModuleList(towers) if fixed else towers   # the fix: nn.ModuleList registers them
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img, txt = self.towers[0](tokens), self.towers[1](texts)
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = DualEncoder(fixed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens))[:BATCH]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
