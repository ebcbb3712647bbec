"""A user writes the two projection heads of an image-text aligner into a plain Python dict keyed by
modality (`self.heads = {"image": ..., "text": ...}`) so that forward can pick the head by name. nn.Module
does not look inside plain dicts or lists: the heads' weights are not registered, `model.parameters()`
holds only the logit scale, the optimizer never sees the heads. They still require grad and receive
gradients on every backward, but nothing updates them, so the two random projections never align and the
loss stays near ln(B) (only the logit scale moves). As in the threads: "Only parameters which are defined
as attributes of module directly are listed in module.parameters()" and "the modules put in python list
will not update parameters while training".
Thread: pytorch/pytorch#4631 ("self.weights = {} ... m2 parameters:" prints nothing); open-mmlab/mmdetection#472
("the modules put in python list will not update parameters while training"); asyml/texar-pytorch#72
("we may want to use a nn.ModuleList instead of python list, thus the layer parameters can be accessable").
Fix: self.heads = nn.ModuleDict({...}) instead of a plain dict.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final
loss 5.5416/5.2819/6.0547 (= 1.333/1.270/1.456 ln(64): above chance, the logit scale sharpens random
similarities); fixed 0.1754/0.1646/0.1757 (0.042/0.040/0.042 ln(64)).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, clip_loss, D, DT, E

THREADS = ("pytorch/pytorch#4631", "open-mmlab/mmdetection#472", "asyml/texar-pytorch#72")
CAUSE = "param_not_in_optimizer"
FAMILY = "architecture"
BATCH = 64


class TwoHeadAligner(nn.Module):
    def __init__(self, fixed=False):
        super().__init__()
        heads = {"image": nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E)),
                 "text": nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))}
        self.heads = nn.ModuleDict(heads) if fixed else heads
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def embed(self, x, modality):
        return F.normalize(self.heads[modality](x), dim=-1)

    def forward(self, tokens, texts):
        return self.embed(tokens.mean(1), "image"), self.embed(texts, "text")


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = TwoHeadAligner(fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
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
