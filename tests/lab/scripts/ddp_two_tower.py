"""The two-tower script under torchrun (gloo, CPU): DDP, each rank its own batch, the same watch call."""

import argparse
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import diagnose

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--steps", type=int, default=30)
args = p.parse_args()

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
g = torch.Generator().manual_seed(0)
z = torch.randn(512, 8, generator=g)
images = z @ torch.randn(8, 24, generator=g) + 0.1 * torch.randn(512, 24, generator=g)
texts = z @ torch.randn(8, 16, generator=g) + 0.1 * torch.randn(512, 16, generator=g)


class Towers(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(24, 32), nn.GELU(), nn.Linear(32, 16))
        self.text = nn.Linear(16, 16)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x, t):
        return F.normalize(self.image(x), dim=-1), F.normalize(self.text(t), dim=-1), self.logit_scale.exp()


model = DDP(Towers())
opt = torch.optim.Adam(model.parameters(), lr=args.lr)
B = 32
order = torch.Generator().manual_seed(torch.initial_seed() + rank)
with diagnose.watch(model, opt, batch_size=B) as w:
    for step in range(args.steps):
        idx = torch.randint(0, 512, (B,), generator=order)
        img, txt, scale = model(images[idx], texts[idx])
        logits = scale * img @ txt.t()
        labels = torch.arange(B)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        opt.zero_grad()
        loss.backward()
        w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        opt.step()
dist.destroy_process_group()
