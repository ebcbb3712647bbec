"""A frozen image-text aligner run in float16, with a new image feature branch trained by Adam at its default eps.

What the user did (pytorch/pytorch#147437): they built on BLIP-2, fed new features into the Q-former's input and, to
fit the new feature network next to the frozen model in GPU memory, ran everything in float16 (`model.half()`), froze
all of BLIP-2 and trained only the new network with `torch.optim.Adam(...)` at its defaults. After the very first
`optimizer.step()` every parameter of the new network was NaN, and every loss after it.

Here: a flamingo-pytorch PerceiverResampler over frozen-backbone patch tokens plus a projection is the new image
branch; the text tower and the logit scale count as the pretrained, frozen part (`requires_grad_(False)`). The whole
model is cast with `.half()` (weights, gradients and Adam's moments all float16) and the new branch is optimized by
`Adam(lr=1e-3)` with the default `eps=1e-8`.

Why it fails: Adam's update is `m_hat / (sqrt(v_hat) + eps)`. In float16, `eps=1e-8` rounds to 0 (the smallest float16
subnormal is ~6e-8), and the second moment `v = (1 - beta2) * g**2 = 1e-3 * g**2` underflows to exactly 0 for every
gradient entry below ~5e-3 in magnitude (about a fifth of the new branch's entries on the first step here), while the
first moment `m = 0.1 * g` does not. So the denominator is 0 and the step is `m / 0 = +-inf` (0/0 = NaN where g was
0): the parameters become inf/NaN on the first step, as the reporter found by debugging the second moment. Not a
learning-rate or gradient-explosion problem (the gradients are small and finite) but float16 arithmetic inside the
optimizer.

Fix (what the thread asks for: an eps that float16 can represent): `Adam(..., eps=1e-4)`, which keeps the denominator
positive; everything else, float16 included, unchanged.

Validation (benchmarks/real_faults/validate.py, 100 steps, B = 32, ln B = 3.4657, torch 2.13 CPU), final CLIP loss
(mean of the last 5 steps) / ln B per seed 0, 1, 2:
- fault: non-finite on all three seeds (the loss is NaN from step 1: the first step writes inf/NaN parameters);
- fixed (eps=1e-4): 0.0363, 0.0412, 0.0403 (final loss 0.126, 0.143, 0.140).

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("pytorch/pytorch#147437",)
CAUSE = "nonfinite_divergence"
FAMILY = "mixed precision"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    tokens, texts = token_pairs(1024, seed=seed)  # frozen-backbone patch tokens, pooled caption features

    model = ResamplerAligner().half()  # fp16 everywhere to save memory
    # the pretrained part stays frozen: text tower and temperature
    model.text.requires_grad_(False)
    model.logit_scale.requires_grad_(False)
    new_params = [p for p in model.parameters() if p.requires_grad]  # resampler + projection: the new branch
    if fixed:
        optimizer = torch.optim.Adam(new_params, lr=1e-3, eps=1e-4)  # an eps float16 can represent
    else:
        optimizer = torch.optim.Adam(new_params, lr=1e-3)  # default eps=1e-8 -> 0 in float16

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx].half(), texts[idx].half())
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits.float())

        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        optimizer.step()
    session.close()
