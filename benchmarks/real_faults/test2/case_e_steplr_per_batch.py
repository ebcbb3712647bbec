"""A StepLR configured in epochs (`step_size=epochs // 2, gamma=0.1`) but stepped after every batch:
the learning rate is divided by 10 every 4 steps, is 1e-6 of its value by step 24 and the model stops
moving while the loss is still near chance. Thread: Lornatang/SRGAN-PyTorch#1 ("step_size=epochs // 2 and
gamma=0.1 ... they are called at each training step which means that learning rate is quickly becoming
zero after a few training steps. The SRGAN does not seem to train"; the maintainer: "Yeah, I found it");
ivadomed/ivadomed#55 ("Scheduler was incorrectly stepped in the batch loop instead of in the epoch loop").
Fix: call scheduler.step() once per epoch.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; final = mean of the last 5 steps): fault
final loss 3.199/2.568/3.792 vs ln(64) = 4.159; fixed 0.153/0.198/0.201.
Ground truth: lr_schedule.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("Lornatang/SRGAN-PyTorch#1", "ivadomed/ivadomed#55")
CAUSE = "lr_schedule"
FAMILY = "optimizer_schedule"
BATCH = 64
EPOCHS = 8


class AttentionPool(nn.Module):
    """One learned query attends over the patch tokens (nn.MultiheadAttention), then a projection; text MLP."""

    def __init__(self):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.attn = nn.MultiheadAttention(D, num_heads=4, batch_first=True)
        self.ln = nn.LayerNorm(D)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, 2 * E), nn.GELU(), nn.Linear(2 * E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        pooled, _ = self.attn(self.query.expand(len(tokens), -1, -1), tokens, tokens)
        img = self.proj(self.ln(pooled[:, 0]))
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    loader = DataLoader(TensorDataset(tokens, texts), batch_size=BATCH, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    model = AttentionPool()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=EPOCHS // 2, gamma=0.1)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        for epoch in range(EPOCHS):
            for tok, txt_in in loader:
                if step >= steps:
                    return
                img, txt = model(tok, txt_in)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=tok, extras={"logit_scale": model.logit_scale.exp()})
                opt.step()
                if not fixed:
                    scheduler.step()
                step += 1
            if fixed:
                scheduler.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
