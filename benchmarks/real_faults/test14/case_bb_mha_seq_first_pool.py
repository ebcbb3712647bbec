"""A user pools the frozen backbone's 16 patch tokens with 16 learned queries (a Q-Former-style attention pooler):
`nn.MultiheadAttention(D, heads)` built with its defaults, the queries expanded to (B, 16, D) and the (B, T, D) patch
tokens as keys and values, then a mean over the query outputs and a projection. The module's default layout is
sequence-first (L, N, E): with `batch_first=False` it reads the batch axis as the sequence and the query/token axis
as the batch, and because the user chose as many queries as patches the shapes line up and nothing raises. Each
softmax then runs over the B images of the batch, and since a learned query is the same for every image, every image
gets the same attention weights over the same keys: every image embedding is the same vector, and the contrastive
loss sits at ln(B). The TDANet thread: "the
code uses pytorch's nn.MultiheadAttention module, which demands the input shape [T, B, C] ... However the code's
input shape of this part is [B, T, C]. This will make attention weights act on batch dimension, instead of time
dimension."; the author: "I think you are right, it is a code error."
Thread: JusperLee/TDANet#3 ("This will make attention weights act on batch dimension, instead of time dimension").
Fix: build the attention with `batch_first=True` so it attends over the tokens of each image.
Validated without the tool (seeds 0,1,2; 120 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.167/4.166/4.172 (= 1.00/1.00/1.00 ln(B), ln(64) = 4.159); fixed 0.146/0.132/0.133 (= 0.04/0.03/0.03 ln(B), ln(64) = 4.159).
Ground truth: pooling_axis.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math

import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, T, clip_loss, token_pairs

THREADS = ("JusperLee/TDANet#3",)
CAUSE = "pooling_axis"
FAMILY = "architecture"
BATCH = 64


class AttnPoolAligner(nn.Module):
    """Patch tokens -> learned queries cross-attending to them -> mean over queries -> projection; text -> projection."""

    def __init__(self, queries: int = T, batch_first: bool = False):
        super().__init__()
        self.queries = nn.Parameter(0.02 * torch.randn(queries, D))
        self.attn = nn.MultiheadAttention(D, num_heads=4, batch_first=batch_first)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        q = self.queries.unsqueeze(0).expand(len(tokens), -1, -1)   # (B, 16, D)
        x, _ = self.attn(q, tokens, tokens)                          # tokens: (B, T, D) from the loader
        img = self.proj(x.mean(1))
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = AttnPoolAligner(batch_first=fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
