"""Fine-tuning new projection heads on a frozen pretrained dual encoder: the user attaches
`model.image_head` / `model.text_head` to the loaded model and then runs the usual freeze loop over
`model.parameters()`, which also sets requires_grad=False on the freshly initialised heads. The optimizer is built
from the parameters that still require grad (plus the learnable temperature, which lives in the loss module), so the
only thing that trains is logit_scale: the heads stay random and the CLIP loss sits above ln(B).
Thread: LTH14/rcg#23 ("a new projector head MLP is added after loading the pre-trained MoCo v3 model. However, the
parameters of this newly added component are also set to requires_grad=False ... why does it not require any
training before being used for feature projection?").
Fix: freeze only the trunks (`model.vision`, `model.text`), not the whole model with its new heads.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.8831/5.0032/5.2046 (= 1.174/1.203/1.251 ln(64)); fixed 0.1992/0.2191/0.2393 (= 0.048/0.053/0.058 ln(64)).
Ground truth: no_gradient_path (the heads, the part that should train, get no gradient).
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, clip_loss, token_pairs

THREADS = ("LTH14/rcg#23",)
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64
W = 64


class DualEncoder(nn.Module):
    """Stand-in for a pretrained dual encoder: patch-token trunk and text trunk (loaded, meant to stay frozen)."""

    def __init__(self):
        super().__init__()
        self.vision = nn.Sequential(nn.Linear(D, W), nn.GELU(), nn.Linear(W, W))
        self.text = nn.Sequential(nn.Linear(DT, W), nn.GELU(), nn.Linear(W, W))

    def forward(self, tokens, texts):
        img = self.vision(tokens).mean(1)
        txt = self.text(texts)
        if hasattr(self, "image_head"):
            img, txt = self.image_head(img), self.text_head(txt)
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


class ClipLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, img, txt):
        logits = self.logit_scale.exp() * img @ txt.t()
        return clip_loss(logits), logits


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = DualEncoder()  # "pretrained" weights
    # new trainable projection heads on top of the frozen trunks
    model.image_head = nn.Sequential(nn.Linear(W, W), nn.GELU(), nn.Linear(W, E))
    model.text_head = nn.Sequential(nn.Linear(W, W), nn.GELU(), nn.Linear(W, E))
    frozen = [model.vision, model.text] if fixed else [model]  # bug: freezes the whole model, new heads included
    for module in frozen:
        for p in module.parameters():
            p.requires_grad = False
    criterion = ClipLoss()
    params = [p for p in model.parameters() if p.requires_grad] + list(criterion.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            loss, logits = criterion(img, txt)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": criterion.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
