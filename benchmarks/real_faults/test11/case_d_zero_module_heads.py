"""Both projection heads created with a ControlNet-style `zero_module` (weights and biases set to 0) so that "the
new heads start neutral". With both heads at exactly zero, every image and text embedding is the zero vector,
F.normalize leaves it at zero, all logits are 0 and the loss is exactly ln(B). The gradient reaching the image head
is scale * (P - I) @ text = 0 because the text embeddings are 0, and symmetrically for the text head; the logit
scale multiplies all-zero cosines, so it gets no gradient either: nothing ever moves and the loss stays flat at
chance. alinlab/L2T-ww#7: "Why should the weight of linear layers in WeightNetwork be initialized as 0 here? ...
the accuracy didn't improve with epochs at all, it keeped very low during all the training";
jthickstun/pytorch_musicnet#4 (maintainer): "This is a linear model, so zero-initialization is fine because there
are no symmetries in the loss surface that need to be broken" - which is not the case when two zero heads feed a
product.
Thread: alinlab/L2T-ww#7 ("the accuracy didn't improve with epochs at all"); jthickstun/pytorch_musicnet#4
("zero-initialization is fine because there are no symmetries").
Fix: keep the default (random) init of the heads (no zero_module).
Validated without the tool (seeds 0,1,2; 80 steps; batch 128; final = mean of the last 5 steps): fault final loss
4.852/4.852/4.852 (= 1.00/1.00/1.00 ln(128)); fixed 0.354/0.427/0.370 (= 0.07/0.09/0.08 ln(128)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, clip_loss, token_pairs

THREADS = ("alinlab/L2T-ww#7", "jthickstun/pytorch_musicnet#4")
CAUSE = "no_gradient_path"
FAMILY = "initialisation"
BATCH = 128


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.detach().zero_()
    return module


class Aligner(nn.Module):
    def __init__(self, zero_heads: bool):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        init = zero_module if zero_heads else (lambda m: m)
        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.image_head = init(nn.Linear(D, E))
        self.text_head = init(nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E)))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        return F.normalize(self.image_head(lat.mean(1)), dim=-1), F.normalize(self.text_head(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = Aligner(zero_heads=not fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
