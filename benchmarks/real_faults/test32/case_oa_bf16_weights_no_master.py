"""Mixed precision: the whole model is cast to bfloat16 (weights included) to train "in bf16", so AdamW's
small updates are rounded away when they are written back into bf16 weights; there is no fp32 master copy.

What the user did: a resampler aligner (flamingo-pytorch PerceiverResampler over frozen-backbone patch
tokens, linear image and text projections, learnable logit scale) fine-tuned with AdamW at lr 1e-4. To get
bf16 speed and memory they did what `XLA_USE_BF16=1` does on a TPU, or `model.to(torch.bfloat16)` on a GPU:
every float tensor, the parameters included, becomes bfloat16, and the batch is cast to match. The loop runs,
nothing overflows (bf16 has fp32's exponent range), the loss is finite, but it barely moves: after 100 steps
it is still at ln(B), where the identical fp32 run is at a third of it.

What goes wrong and why: bf16 keeps 8 significant bits, so a weight w can only change by at least half its
spacing, about |w| * 2^-9 .. 2^-8 (0.2-0.4 % of |w|). AdamW's step is about lr = 1e-4 per element whatever the
gradient, i.e. 0.1 % of a 0.1-sized weight, 0.01 % of a LayerNorm gain and less of the logit scale (2.66): the
update is computed (the optimizer state is bf16 too), added, and rounded back to the same bf16 value. Only
elements near zero (the biases, which start at 0) move: measured on seed 0, after 100 steps 76 % of all
parameter elements, every LayerNorm gain and the logit scale still hold exactly their initial values.
Mixed-precision recipes avoid this by keeping fp32 master weights and only computing in bf16 (apex O2,
torch.autocast, the recipe described in pytorch/xla#1955).

Threads: pytorch/xla#3167 (with `XLA_USE_BF16=1`, "the losses when using bfloat16 decrease much slower":
3.42 -> 2.03 over 5 epochs against 1.48 -> 1.18 in float32; the same report as huggingface/accelerate#185),
pytorch/xla#1330 (GPT-2 "not training well with XLA_USE_BF16=1", perplexity 120 against 65, while mixed
precision on GPU shows no difference; the request is for O2-style mixed precision, i.e. fp32 master weights),
pytorch/xla#1955 (the mixed-precision recipe: bf16 activations and gradients, optimizer step on a float32 master
copy of the weights).

Fix (fixed=True): keep the parameters (and so AdamW's update) in float32 and run the forward pass under
`torch.autocast("cpu", dtype=torch.bfloat16)`: bf16 compute, fp32 master weights.

Validation (validate.py, 100 steps, B=32, final = mean of the last 5 CLIP losses, ln(32) = 3.4657):
fault final/ln(B) = 1.128, 1.028, 0.982 (seeds 0, 1, 2); fixed = 0.387, 0.342, 0.348.

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("pytorch/xla#3167", "huggingface/accelerate#185", "pytorch/xla#1330", "pytorch/xla#1955")
CAUSE = "learning_rate_too_low"
FAMILY = "mixed precision"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    if not fixed:
        model = model.to(torch.bfloat16)          # weights, and so AdamW's state, in bf16: no fp32 master copy
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        perm = torch.randperm(len(tokens), generator=g)
        for i in range(0, len(tokens) - B + 1, B):
            if step >= steps:
                break
            idx = perm[i:i + B]
            if fixed:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    img, txt = model(tokens[idx], texts[idx])
                    logits = model.logit_scale.exp() * img @ txt.t()
            else:
                img, txt = model(tokens[idx].to(torch.bfloat16), texts[idx].to(torch.bfloat16))
                logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits.float())
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B)
            optimizer.step()
            step += 1
    session.close()
