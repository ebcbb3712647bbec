"""A CLS-token attention-pooling image head built on `nn.MultiheadAttention` without `batch_first=True`. The
user's aligner prepends a learned CLS token to the frozen backbone's patch tokens, (B, 1 + T, D) as everywhere else
in the code, runs one self-attention layer and takes the CLS position's output as the image vector, projected into
the shared space. `nn.MultiheadAttention` defaults to `batch_first=False` and reads (B, 1 + T, D) as (sequence,
batch, feature) without any error when q, k and v have the same shape: for each token position the softmax runs
over the B images of the batch instead of over the tokens of one image. At the CLS position every query and key is
the same learned CLS vector, so its attention is uniform over the batch and its output is the same vector for every
image: the image embeddings are one point and the loss cannot leave ln(B). The threads: "pytorch nn.MultiheadAttention uses batch_first=False as
default, in your code i think you are intended it to be batch first"; "The issue was just that I forgot to set
`batch_first=True`".
Thread: kyegomez/movie-gen#8 ("nn.MultiheadAttention uses batch_first=False as default, in your code i think you are
intended it to be batch first"); pytorch/pytorch#122959 ("The issue was just that I forgot to set
`batch_first=True`").
Fix: `nn.MultiheadAttention(D, 2, batch_first=True)`.
Validated without the tool (seeds 0,1,2; 100 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1671/4.1797/4.1790 (= 1.002/1.005/1.005 ln(64)); fixed 0.4159/0.4095/0.4323 (= 0.100/0.098/0.104 ln(64)).
Ground truth: pooling_axis.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss

THREADS = ("kyegomez/movie-gen#8", "pytorch/pytorch#122959")
CAUSE = "pooling_axis"
FAMILY = "architecture"
BATCH = 64


class AttnPoolAligner(nn.Module):
    def __init__(self, batch_first: bool = False):
        super().__init__()
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, D))
        self.attn = nn.MultiheadAttention(D, 2, batch_first=batch_first)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        x = torch.cat([self.cls.expand(len(tokens), 1, D), tokens], dim=1)  # (B, 1 + T, D)
        out, _ = self.attn(x, x, x, need_weights=False)
        return F.normalize(self.proj(out[:, 0]), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed=seed)
    model = AttnPoolAligner(batch_first=fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=len(img), inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
