"""A learnable CLS token is prepended to the frozen patch tokens and one pre-norm self-attention block pools
them; the CLS output is projected and aligned with the text projection. The block is an
nn.MultiheadAttention built with its defaults while the tokens are laid out (batch, tokens, dim): the
module reads them as (seq, batch, dim), so each token attends to the same position of the other images in
the batch. Every image's CLS row then sees only CLS rows, all alike, and the loss never leaves ln(B).

Thread: om-ai-lab/OmDet#19 ("Shouldn't this MultiHeadAttention be initialized with `batch_first=True`, as the inputs of the self_attn layer are of the shape (batch_size, ...)?")
Fix: build the attention with `batch_first=True`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss 4.16/4.16/4.16 (= 1.00/1.00/1.00 ln(B)); fixed 0.23/0.24/0.23 (= 0.05/0.06/0.06 ln(B)).
Ground truth: pooling_axis.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, T, clip_loss, token_pairs

THREADS = ("om-ai-lab/OmDet#19",)
CAUSE = "pooling_axis"
FAMILY = "architecture"
BATCH = 64


class ClsPoolAligner(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, D))
        self.pos = nn.Parameter(0.02 * torch.randn(1, T + 1, D))
        self.norm1 = nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, num_heads=4, batch_first=batch_first)
        self.norm2 = nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos  # (B, 1+T, D)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return F.normalize(self.proj(x[:, 0]), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ClsPoolAligner(batch_first=fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
