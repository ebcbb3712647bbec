"""Gradient accumulation with a contrastive loss: a batch of 64 does not fit, so the loop runs 16 micro-batches
of 4, computes the CLIP loss inside each micro-batch and accumulates the gradients. Each row is scored against
3 negatives instead of 63, so the loss (chance ln 4 = 1.39) saturates early and the embeddings stay coarse.

Threads: huggingface/sentence-transformers#1822 ("with grad acc you miss these additional negatives ... The loss
is computed with N/M negatives and then just averaged"), google-research/simclr#203 ("I max out at batch size 4
... an effective batch size of 64 (with minibatch size 4) ... it would be like computing the averaged dot product
of 8 instances of 4 pairs"), luyug/GradCache#7 (batch 64 directly "had a much better performance" than
mini-batches of 16). Fix: score each row against the whole batch (here: MICRO = BATCH; with less memory,
GradCache-style cached embeddings).
Model: flamingo-pytorch PerceiverResampler over frozen patch tokens (common.ResamplerAligner), AdamW.

Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean over the last 12 steps): fault logged loss
0.024 / 0.023 / 0.030 (4-way, chance ln 4 = 1.386), but the 64-way CLIP loss of the same embeddings is
0.375 / 0.367 / 0.494 (in-batch top-1 0.988 / 0.984 / 0.951); fixed 0.174 / 0.160 / 0.192 (top-1 1.000 / 0.999 /
1.000): learns worse, 64-way loss 2.4x the fixed one on average.
Ground truth: too_few_negatives.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/real_faults (common.py)

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/sentence-transformers#1822", "google-research/simclr#203", "luyug/GradCache#7")
CAUSE = "too_few_negatives"
FAMILY = "batch_candidates"
BATCH = 64


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    MICRO = BATCH if fixed else 4                             # micro-batch that "fits in memory"
    tokens, texts = token_pairs(2048, seed=seed)
    torch.manual_seed(seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=BATCH,
                                         shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, txt in loader:
                if step >= steps:
                    break
                imgs, caps, logged = [], [], 0.0
                for i in range(0, BATCH, MICRO):
                    img, cap = model(tok[i:i + MICRO], txt[i:i + MICRO])
                    logits = model.logit_scale.exp() * img @ cap.t()
                    loss = clip_loss(logits) / (BATCH // MICRO)
                    loss.backward()
                    logged += loss.detach()
                    imgs.append(img.detach())
                    caps.append(cap.detach())
                w.observe(step, losses={"clip": logged}, embeddings={"image": torch.cat(imgs), "text": torch.cat(caps)},
                          logits=logits, batch_size=BATCH, inputs=tok)
                opt.step()
                opt.zero_grad()
                step += 1


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
