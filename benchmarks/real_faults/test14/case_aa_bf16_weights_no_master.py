"""A user trains an image->text aligner "fully in bf16" to save memory: `model.to(torch.bfloat16)`, inputs cast to
bf16, the stock AdamW at a fine-tuning lr of 1e-4. AdamW computes each update correctly, but writes it back into the
bf16 parameter, and bf16 keeps only 8 bits of mantissa: for a weight of magnitude 0.1 the nearest representable
neighbours are ~4e-4 away, so an Adam step of ~1e-4 rounds back to the same value. Most weights never move, the loss
stays near ln(B), and nothing is NaN or flagged. The speculators PR: "our training is done fully in `bf16` ... the
weights are never updated as the gradient update delta is smaller than the step size to move away from 1.0 in bf16
format"; the NeMo Automodel PR: "directly updating BF16-resident parameters causes many optimizer steps to round back
to the same BF16 value".
Thread: vllm-project/speculators#765 ("Fix numerical issues by holding params in fp32"); NVIDIA-NeMo/Automodel#3444
("use FP32 master weights").
Fix: hold the parameters (and so the optimizer's updates) in fp32 and run the forward in bf16 (autocast), the
fp32-master-weights fix of both PRs.
Validated without the tool (seeds 0,1,2; 150 steps; batch 32; final = mean of the last 5 steps): fault final loss
4.009/2.507/3.073 (= 1.16/0.72/0.89 ln(B), ln(32) = 3.466); fixed 0.897/0.589/0.735 (= 0.26/0.17/0.21 ln(B), ln(32) =
3.466).
Ground truth: learning_rate_too_low.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from common import DT, D, E, token_pairs

THREADS = ("vllm-project/speculators#765", "NVIDIA-NeMo/Automodel#3444")
CAUSE = "learning_rate_too_low"
FAMILY = "precision"
BATCH = 32
LR = 1e-4


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


def train(watch, steps: int = 150, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = PooledAligner()
    if fixed:
        dtype, amp = torch.float32, lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    else:
        model = model.to(torch.bfloat16)
        dtype, amp = torch.bfloat16, contextlib.nullcontext
    tokens, texts = tokens.to(dtype), texts.to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
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
