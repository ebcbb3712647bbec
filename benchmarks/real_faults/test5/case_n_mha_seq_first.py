"""nn.MultiheadAttention left at its default batch_first=False in a [CLS]-token attention pooler fed batch-first
tensors. The image tower prepends a learned [CLS] token to the (B, T, E) patch tokens and takes the [CLS] output as
the image embedding. Without batch_first=True, MultiheadAttention reads (B, 1+T, E) as (L=B, N=1+T, E): attention
(and its softmax) runs over the batch axis, separately for each token position. For position 0 every "sequence"
element is the same learned [CLS] vector, so the pooled output is identical for every image in the batch; no
shape error is raised.
Threads: om-ai-lab/OmDet#19 ("Shouldn't this MultiHeadAttention be initialized with `batch_first=True`, as the
inputs of the self_attn layer are of the shape (batch_size, ...)? This causes inconsistencies when using the model
for batch inference." / "I have checked the code, and it should be batch_first=True."); pytorch/pytorch#122959
("The issue was just that I forgot to set `batch_first=True`").
Fix: nn.MultiheadAttention(E, num_heads=2, batch_first=True).
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.161/4.161/4.160 (= 1.000/1.000/1.000 ln(64)); fixed 0.172/0.189/0.129 (= 0.041/0.045/0.031 ln(64)).
Ground truth: pooling_axis.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import token_pairs, clip_loss, D, DT, E

THREADS = ("om-ai-lab/OmDet#19",)
CAUSE = "pooling_axis"
FAMILY = "architecture"
BATCH = 64


class AttnPoolAligner(nn.Module):
    """Patch tokens + a learned [CLS] token -> self-attention -> the [CLS] output -> projection; text -> projection."""

    def __init__(self, fixed: bool = False):
        super().__init__()
        self.inp = nn.Linear(D, E)
        self.cls = nn.Parameter(torch.randn(1, 1, E) * 0.02)
        self.attn = nn.MultiheadAttention(E, num_heads=2, batch_first=fixed)  # the bug: batch_first left False
        self.proj = nn.Linear(E, E)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        x = self.inp(tokens)                                    # (B, T, E)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1)  # (B, 1 + T, E)
        h, _ = self.attn(x, x, x)         # read as (L=B, N=1+T, E) when batch_first=False
        img = self.proj(h[:, 0])          # the [CLS] output
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = AttnPoolAligner(fixed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
