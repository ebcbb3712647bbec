"""Gradient accumulation + a GradScaler: the loss handed to the logger is still multiplied by the loss scale
on every micro-batch that does not end an accumulation cycle, so the logged "training loss" is thousands of
times the objective while the model learns normally.

What the user did: trained a vision->text aligner (perceiver-pytorch Perceiver over frozen patch tokens, a
projection, a small text MLP, a learnable logit scale) with mixed-precision style loss scaling
(`torch.amp.GradScaler`) and gradient accumulation over 4 micro-batches of 32. Their loop keeps one `loss`
variable: it is replaced by the scaled loss before `backward()`, and it is unscaled again for the logger in
the branch that runs the optimizer step, after `scaler.step` / `scaler.update`, the way fastai's
MixedPrecision callback unscaled `learn.loss` in `after_backward`.

What went wrong and why: the unscaling sits in the code that only runs at the end of an accumulation cycle
(in fastai, GradientAccumulation cancelled the batch before MixedPrecision's `after_backward` ran), so on 3
micro-batches out of 4 the value logged is `scale * loss / 4` with a scale of 65536: a logged loss of tens
of thousands at the start and still hundreds when the objective is ~0.05, jumping to the true value on
every 4th micro-batch ("Gradient Accumulation + Mixed Precision shows artificially
high training loss ... very large losses such as 6000000+ to be logged"). The optimizer itself is right
(`scaler.step` unscales the gradients), so the objective falls; only the number on the dashboard is wrong,
and it is wrong by a factor that jumps between steps.

Thread: fastai/fastai#3048 (the bug report, with its forum thread), fixed by fastai/fastai#3049 ("Moved the
unscaling ... to `after_batch`" so that the loss is unscaled whether or not the batch ended a cycle).

Fix (fixed=True): keep the unscaled objective for logging on every micro-batch (`clip = clip_loss(logits)`),
and hand only the scaled copy to `backward()`.

Validation (validate.py, 100 optimizer steps = 400 logged micro-batches of 32, final = mean of the last 5
logged values, chance ln(32) = 3.4657):
    seed 0: fault 569.70 (164.4 ln B), fixed 0.0575 (0.017 ln B)
    seed 1: fault 521.57 (150.5 ln B), fixed 0.0591 (0.017 ln B)
    seed 2: fault 506.08 (146.0 ln B), fixed 0.0455 (0.013 ln B)
(the first logged value of the fault is 78852 / 78692 / 92030; the weights are the same in both runs: the
gradients are identical, only the logged number differs.)

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("fastai/fastai#3048", "fastai/fastai#3049")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

MICRO_B = 32
ACC = 4  # micro-batches per optimizer step


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(4096, seed=seed)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    scaler = torch.amp.GradScaler("cpu")
    g = torch.Generator().manual_seed(seed + 1)

    session = watch(model, optimizer, batch_size=MICRO_B)
    for it in range(steps * ACC):
        idx = torch.randint(0, len(tokens), (MICRO_B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()

        if fixed:
            clip = clip_loss(logits)                      # the objective, logged as is
            scaler.scale(clip / ACC).backward()
            logged = clip
        else:
            loss = clip_loss(logits) / ACC
            loss = scaler.scale(loss)                     # scaled for backward ...
            loss.backward()
            logged = loss                                 # ... and this is what reaches the logger

        if (it + 1) % ACC == 0:
            scale_used = scaler.get_scale()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)
            if not fixed:
                logged = loss / scale_used * ACC          # unscaled for the logger, only here

        session.observe(it, losses={"clip": logged}, embeddings={"image": img, "text": txt},
                        logits=logits, batch_size=MICRO_B, inputs=tokens[idx].mean(1))
    session.close()
