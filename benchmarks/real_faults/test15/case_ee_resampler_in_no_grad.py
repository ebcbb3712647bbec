"""A user aligns a frozen vision backbone to a frozen text tower through a trainable Perceiver
resampler and projection (flamingo-pytorch). To save memory they run the frozen backbone under
`torch.no_grad()`, and the resampler and projector calls sit in the same `with` block, one line
below the backbone. The text tower is frozen too (requires_grad False), so the only tensor with a
gradient path is the logit scale. Training runs without an error, the optimizer steps, and the loss
never gets below ln(B) (it ends above it). The threads report the same pattern in contrastive code: features
computed under `no_grad` give a loss that is "just a constant value" for the model.

Thread: hangyu94/Ada-CM#8 ("If you using torch.no_grad(), the feature_u and feature_u2 have no gradient to update model's parameter")
Thread: edreisMD/ConVIRT-pytorch#7 ("Just wondering why it is the text encoder is wrapped in a 'with torch.no_grad()' block?")
Fix: run only the frozen backbone under torch.no_grad(); call the resampler and projector outside the block.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss 4.67/4.89/5.03 (= 1.122/1.177/1.208 ln(B)); fixed 0.83/0.82/0.89 (= 0.199/0.197/0.213 ln(B)).
Ground truth: no_gradient_path.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("hangyu94/Ada-CM#8", "edreisMD/ConVIRT-pytorch#7")
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.backbone = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D))  # "pretrained", frozen
        self.text_tower = nn.Linear(DT, E)  # frozen text tower
        for p in list(self.backbone.parameters()) + list(self.text_tower.parameters()):
            p.requires_grad_(False)
        self.resampler = PerceiverResampler(dim=D, depth=1, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            x, t = tokens[idx], texts[idx]
            with torch.no_grad():
                feats = model.backbone(x)
                txt = F.normalize(model.text_tower(t), dim=-1)
                if not fixed:  # the bug: the trainable resampler + projector run inside the no_grad block
                    img = F.normalize(model.proj(model.resampler(feats.unsqueeze(1))[:, 0].mean(1)), dim=-1)
            if fixed:
                img = F.normalize(model.proj(model.resampler(feats.unsqueeze(1))[:, 0].mean(1)), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=x, extras={"logit_scale": model.logit_scale.exp().detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
