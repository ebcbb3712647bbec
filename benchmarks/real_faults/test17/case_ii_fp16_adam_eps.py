"""Whole model cast to float16 and trained with a plain Adam whose state lives in float16 too: the default
eps=1e-8 rounds to 0 in half precision, every gradient below ~2e-3 squares to 0 in the second moment
((1 - 0.98) * g**2 underflows), and the first optimizer.step() divides by zero: the weights are NaN from step 1 on.

What the user did: fine-tuned a CLIP-style aligner (flamingo-pytorch PerceiverResampler over patch tokens,
linear projections, learnable logit scale) in half precision the way openai/CLIP hands its weights out
(`clip.load(...)` returns fp16 weights on GPU; here `model.half()`), inputs cast to half, and
`torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))` straight on those fp16 parameters. No
GradScaler, no fp32 master weights. The first loss is finite; the first step writes inf/NaN into most
tensors; every later loss is NaN.

The threads: openai/CLIP#40, "NaN values after a single gradient step" (Adam on the fp16 model returned by
`clip.load`, "Output: tensor([[nan, nan, ...") and openai/CLIP#57, "Using Adam, I got errors either nan or
inf since attribute eps is hard to specify for Half and float32. My walk around is to divide parameters into
two groups and specify different eps." The answer that became the community training recipe
(openai/CLIP#83) keeps the optimizer in fp32: `convert_models_to_fp32(model)` before `optimizer.step()`
(p.data = p.data.float(); p.grad.data = p.grad.data.float()), then `clip.model.convert_weights(model)` back
to fp16 for the next forward.

Thread: openai/CLIP#40
Thread: openai/CLIP#57
Fix: step the optimizer on fp32 copies of the weights and gradients (the thread's convert_models_to_fp32 /
convert_weights round trip), so Adam's moments and eps live in float32; the forward stays fp16.

Validation (benchmarks/real_faults/validate.py --half test17 --only case_ii_fp16_adam_eps, seeds 0 1 2,
B = 32, ln(B) = 3.4657, 100 steps): fault final loss non-finite on all 3 seeds (first non-finite loss at step
1); fixed final / ln(B) = 0.3319 / 0.3224 / 0.3261.

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import pathlib

import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("openai/CLIP#40", "openai/CLIP#57")
CAUSE = "nonfinite_divergence"
FAMILY = "mixed precision"

B, LR = 32, 1e-4


def convert_models_to_fp32(model):  # openai/CLIP#83's helper
    for p in model.parameters():
        p.data = p.data.float()
        if p.grad is not None:
            p.grad.data = p.grad.data.float()


def convert_weights(model):  # clip.model.convert_weights, for this model: back to fp16 for the forward
    for p in model.parameters():
        p.data = p.data.half()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    tokens, texts = tokens.half(), texts.half()
    model = ResamplerAligner().half()  # clip.load(...) hands out fp16 weights
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(seed)
    with watch(model, optimizer, batch_size=B) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=B, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            if fixed:
                convert_models_to_fp32(model)
                optimizer.step()
                convert_weights(model)
            else:
                optimizer.step()


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
