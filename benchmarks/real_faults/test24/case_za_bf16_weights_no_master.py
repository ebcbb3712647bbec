"""The whole aligner is cast to bfloat16 and trained in it: AdamW's small steps round away in the bf16 weights.

What the user did: fine-tuned a flamingo-pytorch PerceiverResampler aligner (patch tokens -> resampler -> mean over
latents -> projection, text -> projection, CLIP loss) the way the seamless_communication fine-tuning CLI did
before its fix: the model is loaded directly in the half dtype (`load_unity_model(..., dtype=float_dtype)` with
`float_dtype = torch.float16`; on this CPU run it is bfloat16, the half dtype the CLI later picks when the device
is the CPU), the optimizer is AdamW(betas=(0.9, 0.98), eps=1e-8, weight_decay=0) on those half-precision
parameters with a short linear warm-up, and the forward runs on them. No fp32 copy of the weights exists.

What went wrong and why: AdamW computes its step in the parameter's dtype and adds it to a bf16 weight. bf16 has an
8-bit significand: a weight of magnitude 0.06-0.12 moves only by multiples of 4.9e-4, so any step below half of
that (2.4e-4) rounds back to the same value. With lr=1e-4 Adam's per-element step is ~lr, so the update is lost to
rounding for every weight except those closer to zero than about lr * 256: only 23-24% of the parameter entries
change at all during the run (the zero-initialised biases and the smallest weights); the resampler's latents, every
LayerNorm gain, the logit scale and over 80% of each projection's weights never change by one bit. The loss sits
at its initial value (above ln(B), the logit scale is 1/0.07) for all 100 steps. The
same script with fp32 weights learns at the same lr. The fine-tuning CLI "would [be] unable to converge" (thread).

Thread: facebookresearch/seamless_communication#399 ("Fix float precision in Finetune CLI": "The finetune CLI would
load the model in float16 and then attempt to train. Doing it this way, the model would [be] unable to converge.
Here the model is loaded in float32 and then we allow autocasting where it is needed"; merged).

Fix (fixed=True): the merged fix: keep the weights (and so AdamW's update) in float32 and run the forward under
`torch.autocast(..., dtype=torch.bfloat16)`; same lr, warm-up and data.

Validation (validate.py --half test24, seeds 0/1/2, 100 steps, B=32, final CLIP loss / ln(B)):
fault 1.095 / 1.037 / 1.078 (final 3.79 / 3.59 / 3.73 vs ln 32 = 3.466), fixed 0.399 / 0.375 / 0.382.

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("facebookresearch/seamless_communication#399",)
CAUSE = "learning_rate_too_low"
FAMILY = "mixed precision"

B = 32
WARMUP = 10


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    float_dtype = torch.bfloat16  # the half dtype on a CPU (the CLI used float16)
    weight_dtype = torch.float32 if fixed else float_dtype
    model = model.to(weight_dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / WARMUP))

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        x, t = tokens[idx].to(weight_dtype), texts[idx].to(weight_dtype)
        with torch.autocast(device_type="cpu", dtype=float_dtype, enabled=fixed):
            img, txt = model(x, t)
            logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=x)
        optimizer.step()
        scheduler.step()
    session.close()
