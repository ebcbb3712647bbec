"""A user's own training script, as plain as they come: a two-tower aligner on synthetic pairs under
diagnose.watch. `--lr` sets the learning rate (2e-4 is too low for 30 steps: loss/ln(B) ~1.3, while x10
learns, ~0.25, and x0.1 stays where it is); `--no-watch` never opens a watch; `--crash` raises at step 3;
`--drop-text` leaves the text tower out of the optimizer; `--rebuilt` builds the model again after the optimizer
(which then steps the first model's tensors)."""

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

import diagnose

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=1e-2)
p.add_argument("--steps", type=int, default=40)
p.add_argument("--no-watch", action="store_true")
p.add_argument("--crash", action="store_true")
p.add_argument("--drop-text", action="store_true")
p.add_argument("--rebuilt", action="store_true")
p.add_argument("--marker", default=None, help="ignored: lets a test find its own processes")
args = p.parse_args()

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
        return F.normalize(self.image(x), dim=-1), F.normalize(self.text(t), dim=-1)


model = Towers()
params = [p for n, p in model.named_parameters() if not (args.drop_text and n.startswith("text."))]
opt = torch.optim.Adam(params, lr=args.lr)
if args.rebuilt:
    model = Towers()
if args.no_watch:
    raise SystemExit(0)
B = 32
with diagnose.watch(model, opt, batch_size=B) as w:
    for step in range(args.steps):
        idx = torch.randint(0, 512, (B,))
        img, txt = model(images[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        labels = torch.arange(B)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        opt.zero_grad()
        loss.backward()
        w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        if args.crash and step == 3:
            raise RuntimeError("boom at step 3")
        opt.step()
