"""A flamingo-pytorch resampler aligner trained with automatic mixed precision (fp16 autocast and a
`GradScaler`), where the loop keeps the plain `optimizer.step()` it had before AMP was added:
`scaler.step(optimizer)` runs inside the fp16 branch and `optimizer.step()` runs again after the
if/else, so every step is applied twice, and on a step whose scaled gradients overflowed the
second call applies the inf gradients the scaler had decided to skip. The loss is NaN from the
second step on.

What the user did: AMP added to a working loop behind a flag,
`if cfg.fp16: with autocast(): ...; scaler.scale(loss).backward(); scaler.step(optimizer);
scaler.update()`, `else: ...; loss.backward()`, and the unchanged `optimizer.step()` left below the
branch, at the loop's level. Here the same loop on the CPU (`torch.autocast("cpu",
dtype=torch.float16)`, `torch.amp.GradScaler("cpu")` with its default initial scale of 2**16).

What went wrong and why: `scaler.step(optimizer)` unscales the gradients in place and skips the
update when they hold an inf or a NaN; the `optimizer.step()` that follows steps again with the very
same, already unscaled gradients. On the first step the scaled fp16 gradients overflow (the scaler
halves its scale, as it usually does at the start of an AMP run), so the stray call feeds inf
gradients to AdamW: its moments and then the weights become NaN, and every later loss is NaN. In
the user's thread the loss turned NaN after 4k to 8k iterations at every lr tried (0.1, 0.01,
0.001), until the user reported, in Chinese, that the case was solved: the optimizer had been
stepped twice ("`optimizer` 重复step了"), and `optimizer.step()` belonged inside the else branch.
The Applio pull request removes the same stray `optimizer.step()` calls next to `scaler.step`:
"You should not use optim.step() directly when you're working with GradScaler", tested by
"Debugging NaNs, Infs and values/params in gradients".

The fix: `optimizer.step()` only in the fp32 branch, so that under AMP `scaler.step(optimizer)` is
the only step.

Validation (validate.py, 100 steps, B = 64, chance ln(B) = 4.159; final loss / ln(B)):
fault NaN from step 1 on seeds 0 / 1 / 2 (final loss not finite; step 0's fp16 gradients overflowed
and were stepped anyway), fixed 0.0287 / 0.0288 / 0.0300.

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("FlyEgle/imageclassification#1", "IAHispano/Applio#860")
CAUSE = "nonfinite_divergence"
FAMILY = "mixed precision"

B = 64
LR = 1e-3
FP16 = True


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    scaler = torch.amp.GradScaler("cpu", enabled=FP16)

    session = watch(model, optimizer, batch_size=B)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        optimizer.zero_grad()
        if FP16:
            with torch.autocast("cpu", dtype=torch.float16):
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
            scaler.scale(loss).backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B)
            scaler.step(optimizer)
            scaler.update()
        else:
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B)
            if fixed:
                optimizer.step()
        if not fixed:
            optimizer.step()
    session.close()
