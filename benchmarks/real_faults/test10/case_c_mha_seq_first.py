"""An attention pooler over frozen patch tokens built from `nn.MultiheadAttention`, fed (B, T, D) tensors while
the module is in its default sequence-first layout (`batch_first=False`): it reads the batch as the sequence,
so each token position attends over the 64 images of the batch instead of over its own image's 16 tokens; the
attention softmax normalises over the batch axis and every image embedding is a mixture of the other images.
No error is raised since q, k, v have the same shape. Two such blocks, then mean over tokens and a projection.
Threads: pytorch/pytorch#63560 ("Why is the sequence dimension before batch size dimension for
nn.MultiheadAttention"); facebookresearch/mobile-vision#205 ("`nn.MultiheadAttention` has `batch_first`
attribute, which defaults to False ... When q, k, v have the same dimensions, the issue may not reveal easily by
itself").
Fix: `nn.MultiheadAttention(D, num_heads=2, batch_first=True)`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
1.415/1.604/1.376 (= 0.340/0.386/0.331 ln(64), ln(64) = 4.159); fixed 0.207/0.260/0.229 (= 0.050/0.063/0.055 ln(64)).
Ground truth: pooling_axis.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss
import math

THREADS = ("pytorch/pytorch#63560", "facebookresearch/mobile-vision#205")
CAUSE = "pooling_axis"
FAMILY = "architecture"
BATCH = 64


class AttnPoolAligner(nn.Module):
    """Frozen-backbone patch tokens -> two self-attention blocks -> mean over tokens -> projection."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn1 = nn.MultiheadAttention(D, num_heads=2, batch_first=batch_first)
        self.attn2 = nn.MultiheadAttention(D, num_heads=2, batch_first=batch_first)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):          # tokens: (B, T, D)
        x = self.norm1(tokens)
        x, _ = self.attn1(x, x, x)
        x = self.norm2(x)
        x, _ = self.attn2(x, x, x)
        return F.normalize(self.proj(x.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = AttnPoolAligner(batch_first=fixed)   # the fix: batch_first=True for (B, T, D) inputs
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
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
