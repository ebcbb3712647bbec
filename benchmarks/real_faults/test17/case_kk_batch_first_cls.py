"""A ViT-style CLS pooling head on frozen patch tokens, built from `nn.TransformerEncoderLayer` left at its
default `batch_first=False` while the tokens are fed batch-first (B, T, D).

What the user did: on top of a frozen vision backbone's patch tokens (B, T, D) they prepend a learned CLS
token, add position embeddings, run one `nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward)` and take
`x[:, 0]` (the CLS output) as the image feature, projected into a CLIP space against a linear text head, with
the usual symmetric InfoNCE and a learnable logit scale (open_clip init).

The bug: `nn.TransformerEncoderLayer` (and `nn.MultiheadAttention`) default to `batch_first=False`, i.e. they
read (S, N, E). Fed (B, T+1, D), self-attention runs over the *batch* axis for every token position: position 0
holds the same CLS embedding for every sample, so the CLS output attends only to the B identical CLS copies
and never sees the image. `x[:, 0]` is the same vector for the whole batch (up to dropout noise), the loss
cannot fall below ln(B) and nothing errors: the shapes are all valid.

From the threads:
- Exorust/TorchLeet#5: "Torch by default uses `batch_first=False` for the `TransformerEncoderLayer`, resulting
  in high training loss and test error." (passing `batch_first=True` fixed it).
- mlfoundations/open_clip#1037 (a user mixing openai CLIP and open_clip transformers): "if `batch_first=False`
  was passed to the attention impl in the resblocks then x needs to be transposed from NLD -> LND and back
  again after."
- IBM/TabFormer#14: the encoder "expects the batch size to be in the second dimension ... the current
  implementation places the batch size in the first dimension which causes an incorrect computation during
  multiheaded attention".

Thread: Exorust/TorchLeet#5
Thread: mlfoundations/open_clip#1037
Thread: IBM/TabFormer#14
Fix: `nn.TransformerEncoderLayer(..., batch_first=True)` (or transpose NLD -> LND before and back after), so
attention runs over the tokens of each image.

Validation (validate.py --half test17, seeds 0 1 2, B=64, ln(B)=4.1589, 150 steps, one CPU thread):
fault final CLIP loss 4.1607 / 4.1628 / 4.1726, final/ln(B) = 1.0004 / 1.0010 / 1.0033 (first step 6.12 / 4.83 / 4.69:
the image rows are identical from step 0); fixed final 0.1300 / 0.1251 / 0.1338, final/ln(B) = 0.0313 / 0.0301 / 0.0322.
1-3 s per run.

Ground truth: pooling_axis.
"""

from __future__ import annotations

import math
import pathlib
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import DT, D, E, T, clip_loss, token_pairs  # noqa: E402

THREADS = ("Exorust/TorchLeet#5", "mlfoundations/open_clip#1037", "IBM/TabFormer#14")
CAUSE = "pooling_axis"
FAMILY = "architecture"


class ClsPoolAligner(nn.Module):
    """Patch tokens -> [CLS] + tokens + pos -> one TransformerEncoderLayer -> CLS output -> projection;
    pooled text features -> linear projection; learnable log logit scale at ln(1/0.07)."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, D))
        self.pos = nn.Parameter(0.02 * torch.randn(1, T + 1, D))
        # the user's line: batch_first left at its default (False) in the fault
        self.block = nn.TransformerEncoderLayer(d_model=D, nhead=2, dim_feedforward=2 * D, batch_first=batch_first)
        self.norm = nn.LayerNorm(D)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens: torch.Tensor, texts: torch.Tensor):
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos  # (B, T+1, D)
        x = self.block(x)
        img = self.proj(self.norm(x[:, 0]))  # CLS pooling
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 150, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ClsPoolAligner(batch_first=fixed)
    B = 64
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed + 100)
    with watch(model, opt, batch_size=B) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens), generator=g)[:B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=B, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp().detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
