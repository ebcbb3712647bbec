"""ViT-style [CLS] pooling built on nn.TransformerEncoderLayer with its default batch_first=False, fed
batch-first tensors (B, 1 + T, D). The encoder reads dim 0 (the batch) as the sequence and dim 1 as the batch, so
every attention softmax runs over the B images of the batch at one token position, and `h[:, 0]` is the output for
"batch element 0": the B copies of the learned [CLS] token attending only to each other. Every image then gets the
same embedding, no image information reaches it, and the loss sits at ln(B). No error is raised because the shapes
are valid either way. The threads: "Is it possible to add option batch_first = True for MultiheadAttention and
transformer modules like it is done for RNN ? Batch x Sequence x Embedding" (pytorch#25100); "the root cause is indeed
`batch_first`" (opacus#158).
Thread: pytorch/pytorch#25100 ("add option batch_first = True for MultiheadAttention and transformer modules");
meta-pytorch/opacus#158 ("this is indeed a bug and the root cause is indeed `batch_first`").
Fix: `nn.TransformerEncoderLayer(..., batch_first=True)`.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
4.1600/4.1615/4.1614 (= 1.000/1.001/1.001 ln(64)); fixed 0.2210/0.2537/0.2336 (0.053/0.061/0.056 ln(64)).
Ground truth: pooling_axis.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, token_pairs, clip_loss

THREADS = ("pytorch/pytorch#25100", "meta-pytorch/opacus#158")
CAUSE = "pooling_axis"
FAMILY = "architecture"
BATCH = 64


class AttnAligner(nn.Module):
    """ViT-style pooling: a learned [CLS] token prepended to the patch tokens (B, T, D) -> 2 transformer
    encoder layers -> the [CLS] output -> projection; text -> small MLP."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, D))
        layer = nn.TransformerEncoderLayer(d_model=D, nhead=2, dim_feedforward=2 * D, dropout=0.0,
                                           batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)   # (B, 1 + T, D)
        h = self.encoder(x)
        img = self.proj(h[:, 0])                        # the [CLS] position
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = AttnAligner(batch_first=fixed)   # the bug: batch_first left at its default False
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
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
