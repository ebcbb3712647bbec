"""A user writes their own Perceiver-style resampler: a set of learned latent queries cross-attends
to the frozen patch tokens through `nn.MultiheadAttention`, the latents are averaged, projected and
aligned to the caption features with the CLIP loss. Their tensors are batch-first, (B, latents, D)
and (B, T, D), but the module is built with the default `batch_first=False`. Because they chose as
many latents as there are patch tokens (16), the shapes pass PyTorch's checks: the module reads the
batch as the sequence, so each latent attends over the *images of the batch* at one token position.
The latent queries are the same for every image, so every image gets the same pooled vector; the loss
sits at ln(B) from the first step to the last. The threads report the same silent layout bug.

Thread: dhimasryan/MOSA-Net-Cross-Domain#10 ("you initialize your MHA blocks with `batch_first=False` ... yet in the `forward` method of your model you seem to presume batch-first")
Thread: pytorch/pytorch#64888 ("I had this bug in my code and wasted couple of days")
Fix: nn.MultiheadAttention(D, 2, batch_first=True)
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss 4.18/4.19/4.17 (= 1.004/1.007/1.003 ln(B)); fixed 0.19/0.23/0.18 (= 0.045/0.055/0.044 ln(B)).
Ground truth: pooling_axis.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, T, clip_loss, token_pairs

THREADS = ("dhimasryan/MOSA-Net-Cross-Domain#10", "pytorch/pytorch#64888")
CAUSE = "pooling_axis"
FAMILY = "architecture"
BATCH = 64


class LatentResampler(nn.Module):
    def __init__(self, num_latents: int = T, fixed: bool = False):
        super().__init__()
        self.latents = nn.Parameter(0.02 * torch.randn(num_latents, D))
        self.norm = nn.LayerNorm(D)
        if fixed:
            self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        else:
            self.attn = nn.MultiheadAttention(D, 2)  # the bug: default batch_first=False, inputs are (B, N, D)
        self.ff = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))

    def forward(self, tokens):
        x = self.norm(tokens)
        q = self.latents.unsqueeze(0).expand(len(tokens), -1, -1)  # (B, latents, D)
        lat = self.attn(q, x, x, need_weights=False)[0]
        return lat + self.ff(lat)


class Aligner(nn.Module):
    def __init__(self, fixed: bool = False):
        super().__init__()
        self.resampler = LatentResampler(fixed=fixed)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = self.proj(self.resampler(tokens).mean(1))
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner(fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            x, t = tokens[idx], texts[idx]
            img, txt = model(x, t)
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
