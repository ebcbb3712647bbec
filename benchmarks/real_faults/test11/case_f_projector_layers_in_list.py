"""Layers kept in a plain Python list: the projection heads are built by a helper that stacks a configurable
number of Linear/GELU blocks into `self.layers = [...]` (a list, not nn.ModuleList / nn.Sequential). nn.Module does
not register modules inside a list, so `model.parameters()` returns only the logit scale: the optimizer never sees
the projection weights. They still take part in the forward pass and receive gradients on every backward, but no
step ever changes them, so image and text stay at their random projections; only the logit scale moves, and the
loss stays above ln(B) (first step 5.72-6.61, final 5.30-5.98).
Thread: pytorch/pytorch#715 ("The parameters of nn.Linear in the for-loop are not included in parameters" -
"You can build a list of modules, and wrap them in nn.ModuleList"); ikostrikov/pytorch-meta-optimizer#11 ("are not
properly registered as parameters ... the current version will not train the LSTM weights at all");
twitter/the-algorithm-ml#136 ("Swaps python's list for torch's ModuleList so all the layers in MLP are properly
registered").
Fix: `self.layers = nn.ModuleList(layers)`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
5.736/5.303/5.978 (= 1.379/1.275/1.437 x ln(B), ln(B) = 4.159); fixed 0.148/0.130/0.183 (= 0.036/0.031/0.044 x ln(B), ln(B) = 4.159).
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, clip_loss, D, DT, E

THREADS = ("pytorch/pytorch#715", "ikostrikov/pytorch-meta-optimizer#11", "twitter/the-algorithm-ml#136")
CAUSE = "param_not_in_optimizer"
FAMILY = "architecture"
BATCH = 64


class ProjectionHead(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, hidden: int = 64, depth: int = 2, fixed: bool = False):
        super().__init__()
        dims = [dim_in] + [hidden] * (depth - 1) + [dim_out]
        layers = []
        for i in range(depth):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < depth - 1:
                layers.append(nn.GELU())
        self.layers = nn.ModuleList(layers) if fixed else layers

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Aligner(nn.Module):
    def __init__(self, fixed: bool = False):
        super().__init__()
        self.image_head = ProjectionHead(D, E, fixed=fixed)
        self.text_head = ProjectionHead(DT, E, fixed=fixed)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = F.normalize(self.image_head(tokens.mean(1)), dim=-1)
        txt = F.normalize(self.text_head(texts), dim=-1)
        return img, txt, self.logit_scale.exp() * img @ txt.t()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = Aligner(fixed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt, logits = model(tokens[idx], texts[idx])
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
