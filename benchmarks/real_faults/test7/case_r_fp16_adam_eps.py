"""The whole aligner is cast with `.half()` (weights, inputs, loss all fp16, no fp32 master copy, no loss
scaling) and trained with torch.optim.Adam at its default eps=1e-8. 1e-8 is below fp16's smallest subnormal
(~6e-8), so it rounds to 0 inside Adam's denominator `sqrt(v_hat) + eps`; where (1 - beta2) * g^2 underflows in
fp16 for a small gradient element, v = 0 while m != 0 and the first optimizer step divides by zero (seed 0: 1-84
inf/NaN entries in every weight and bias of both heads after step 0), and every following loss is NaN.
Thread: NVIDIA/apex#240 ("The default value of eps in Apex is 1e-8, it would be underflow when using FP16. you can
try to set the eps to larger value like 1e-5"); keras-team/keras#11860 ("using FP16, `mse` as loss function and
`adam` as optimizer; the loss can't be calculated ... loss: nan ... There is no issue when using FP32").
Fix: `torch.optim.Adam(..., eps=1e-4)` (an eps representable in fp16).
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss
non-finite on all 3 seeds (NaN from step 1, right after the first optimizer step; step 0 loss 7.15/6.58/5.34);
fixed 0.2138/0.2324/0.1994 (= 0.051/0.056/0.048 ln(64)).
Ground truth: nonfinite_divergence.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math
import torch
import torch.nn.functional as F
from torch import nn
from common import D, DT, E, clip_loss, token_pairs

THREADS = ("NVIDIA/apex#240", "keras-team/keras#11860")
CAUSE = "nonfinite_divergence"
FAMILY = "precision"
BATCH = 64


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_proj = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text_proj = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = F.normalize(self.image_proj(tokens.mean(1)), dim=-1)
        txt = F.normalize(self.text_proj(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    tokens, texts = tokens.half(), texts.half()  # "train in half to save memory"
    model = Aligner().half()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4 if fixed else 1e-8)  # fix: eps representable in fp16
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH)
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
