"""Attention pooling over patch tokens kept in the sequence-first layout (T, B, D) that nn.MultiheadAttention
and openai/CLIP's transformer use internally ("NLD -> LND"): the pooling scores are (T, B) and the softmax is
taken with the batch-first habit `scores.softmax(dim=-1)`, i.e. over the batch. Each patch position's weights
then sum to one across the images of the batch, so an image's embedding depends on which other images share
its batch, and with sharp scores most images get almost no weight on most of their patches.

Threads: ssw-nlp-study-group/nlp_study#2 ("axis 0 is the sequence axis, axis 1 is the batch; the softmax should
be taken along axis 0 to get attention over the sequence"), pytorch/pytorch#25132 (nn.Transformer's (S, N, E)
layout vs the (N, S) masks: "I find this pretty confusing"). Fix: `scores.softmax(dim=0)` (over the patches).
Model: hand-written learned-query attention pooling (unscaled dot-product scores), MLP text projector.

Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean loss over the last 12 steps): fault
0.570 / 1.440 / 3.997 vs ln(64) = 4.159 (seed 2 stays at chance; the others learn 3-7x worse); fixed
0.168 / 0.197 / 0.235.
Ground truth: pooling_axis.
"""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/real_faults (common.py)

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("ssw-nlp-study-group/nlp_study#2", "pytorch/pytorch#25132")
CAUSE = "pooling_axis"
FAMILY = "architecture"
BATCH = 64


class QueryPool(nn.Module):
    """Learned-query attention pooling over sequence-first tokens (T, B, D) -> (B, E)."""

    def __init__(self, fixed: bool):
        super().__init__()
        self.fixed = fixed
        self.query = nn.Parameter(torch.randn(E))
        self.key = nn.Linear(D, E)
        self.value = nn.Linear(D, E)

    def forward(self, x):
        scores = self.key(x) @ self.query                     # (T, B)
        attn = scores.softmax(dim=0) if self.fixed else scores.softmax(dim=-1)   # -1 is the batch here
        return (attn.unsqueeze(-1) * self.value(x)).sum(0)


class Aligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.pool = QueryPool(fixed)
        self.proj = nn.Linear(E, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = self.proj(self.pool(tokens.transpose(0, 1)))   # (B, T, D) -> (T, B, D), as a ViT keeps them
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    tokens, texts = token_pairs(1024, seed=seed)
    torch.manual_seed(seed)
    model = Aligner(fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=BATCH,
                                         shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, txt in loader:
                if step >= steps:
                    break
                img, cap = model(tok, txt)
                logits = model.logit_scale.exp() * img @ cap.t()
                loss = clip_loss(logits)
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": cap}, logits=logits,
                          batch_size=BATCH, inputs=tok)
                opt.step()
                opt.zero_grad()
                step += 1


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
