"""A user short of memory converts the whole aligner to half precision (`model.half()`, inputs cast to fp16) and keeps
the stock `torch.optim.Adam` (eps = 1e-8). The optimizer state then lives in fp16 too: eps rounds to 0, squared
gradients below ~6e-8 flush to 0, so for every weight with a small or zero gradient Adam divides m by sqrt(0) + 0. The
first step writes inf/NaN into the weights and every later loss is NaN. The Mask R-CNN thread: "I change the code
into FP16 training by using set_floatx and tf.cast for many variables ... `K.set_epsilon(1e-4)` ... I was able to train
the model and each loss seems correct but the total loss is Nan"; the answer: "Activate Automatic Mixed Precision".
Thread: matterport/Mask_RCNN#1482 ("Half precision training but get total loss=Nan"; "Activate Automatic Mixed
Precision").
Fix: automatic mixed precision, as the thread answers: the weights and the Adam state stay fp32 and only the forward
runs in fp16 (`torch.autocast(dtype=torch.float16)`).
Validated without the tool (seeds 0,1,2; 80 steps; batch 32; final = mean of the last 5 steps): fault final loss
non-finite (NaN) on all three seeds from step 1; fixed 0.116/0.083/0.102 (= 0.03/0.02/0.03 ln(B), ln(32) = 3.466).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from common import DT, D, E, token_pairs

THREADS = ("matterport/Mask_RCNN#1482",)
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 32


class PooledAligner(nn.Module):
    """Patch tokens -> MLP per token -> mean pool -> projection; text -> MLP; CLIP logit scale."""

    def __init__(self):
        super().__init__()
        self.vision = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, 64))
        self.proj = nn.Linear(64, E)
        self.text = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = self.proj(self.vision(tokens).mean(1))
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = PooledAligner()
    if fixed:
        dtype, amp = torch.float32, lambda: torch.autocast("cpu", dtype=torch.float16)
    else:
        model = model.half()
        dtype, amp = torch.float16, contextlib.nullcontext
    tokens, texts = tokens.to(dtype), texts.to(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,), generator=g)
            with amp():
                img, txt = model(tokens[idx], texts[idx])
                scale = model.logit_scale.exp()
                logits = scale * img @ txt.t()
            labels = torch.arange(BATCH)
            loss = 0.5 * (F.cross_entropy(logits.float(), labels) + F.cross_entropy(logits.float().t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale.detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
