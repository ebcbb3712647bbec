"""Image side: patch tokens -> attention pooling (nn.MultiheadAttention with a learned query) -> MLP;
text side: MLP on pooled text features. I freeze the image tower for a warm-up so the text head
catches up first, then unfreeze it at step 5 with `p.require_grad = True`. Nothing complains, but
the image tower never trains again and the loss stays well above where the same model gets.
The misspelt attribute is just set on the tensor; `requires_grad` stays False.
Thread(s): codertimo/BERT-pytorch#104 ("Fix require_grad typos (should be requires_grad). Before the
fix, the code doesn't cause any errors but doesn't do what it's supposed to do"); HengyiWang/Co-SLAM#12
("Here require_grad should be requires_grad"). Fix: spell it `requires_grad`.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean loss of the last 12 steps): fault
0.890 / 0.878 / 0.949 (learns, but ~0.65 nats / 3.7x worse) vs ln(64) = 4.159; fixed 0.244 / 0.237 / 0.260.
Ground truth: no_gradient_path.
"""
import math

import torch
import torch.nn.functional as F
from common import DT, D, E, clip_loss, token_pairs
from torch import nn

THREADS = ("codertimo/BERT-pytorch#104", "HengyiWang/Co-SLAM#12")
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64
WARMUP_STEPS = 5


class AttnPoolTower(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.attn = nn.MultiheadAttention(D, num_heads=2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))

    def forward(self, tokens):
        pooled, _ = self.attn(self.query.expand(len(tokens), -1, -1), tokens, tokens)
        return self.mlp(pooled[:, 0])


class TwoTower(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_tower = AttnPoolTower()
        self.text_tower = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


def set_trainable(module: nn.Module, flag: bool, fixed: bool) -> None:
    for p in module.parameters():
        if fixed:
            p.requires_grad = flag
        else:
            p.require_grad = flag


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = TwoTower()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.image_tower.requires_grad_(False)  # warm-up: text side first

    gen = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            if step == WARMUP_STEPS:
                set_trainable(model.image_tower, True, fixed)
            idx = torch.randint(0, len(tokens), (BATCH,), generator=gen)
            img = F.normalize(model.image_tower(tokens[idx]), dim=-1)
            txt = F.normalize(model.text_tower(texts[idx]), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
