"""Gradient accumulation whose logged loss is the sum of the micro-batch losses, not their mean: the curve
the user watches sits near (even above) ln(B) while the loss being optimised has fallen well below it.

What the user did: trained a CLIP-style aligner (flamingo-pytorch PerceiverResampler over frozen patch
tokens, a text projection, open_clip's learnable logit scale) with gradient accumulation over ACCUM = 8
micro-batches of B = 16 pairs (the most that fit), each micro-batch's symmetric InfoNCE divided by ACCUM
before `backward()` (so the update is right), and, as in the Trainer loop quoted below, accumulated
`tr_loss += loss.detach()` of the undivided micro-batch losses and logged `tr_loss` once per optimizer
step. The logged number is ACCUM x the mean micro-batch loss: it starts at 8 x ln(16) = 22.2 and ends
at 1.3-2.6 x ln(16), above chance, so the run looks stuck far from learning, while each micro-batch's
loss (what is optimised) has dropped to 0.17-0.33 ln(16).

From the threads:
- huggingface/transformers#35204 "logged loss is not correct with gradient accumulation": "currently logged
  loss doesn't divide gradient accumulation steps, so it will be bigger than expected" (transformers
  v4.46.3, `tr_loss = tr_loss + tr_loss_step` in the inner loop).
- agokrani/distillKitPlus#5: "the scalar loss being loggged ... is summed across all batches without
  adjusting for the number of accumulation steps. This causes my reported loss to scale linearly with
  gradient_accumulation_steps (loss jumps 6 -> 26 when going from 8 -> 32 steps)".
- huggingface/transformers#35438 (the follow-up): "the loss for `gradient_accumulation_steps=2` is
  errornously doubled".

Thread: huggingface/transformers#35204
Thread: agokrani/distillKitPlus#5
Thread: huggingface/transformers#35438
Fix: log the mean of the micro-batch losses (tr_loss / ACCUM); training itself is unchanged.

Validation (benchmarks/real_faults/validate.py --half test17, seeds 0 1 2, micro-batch B = 16, ln(16) =
2.7726, 36 optimizer steps x 8 micro-batches, lr 3e-4): logged (fault) final / ln(B) = 1.3468 / 1.5697 /
2.6436 (logged 3.734 / 4.352 / 7.330, first step 24.70 / 24.62 / 33.72); true mean micro-batch loss (= the
fixed run's log, the same training) final / ln(B) = 0.1684 / 0.1962 / 0.3305 (0.467 / 0.544 / 0.916, first
step 3.088 / 3.078 / 4.215).

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import ResamplerAligner, clip_loss, token_pairs  # noqa: E402

THREADS = ("huggingface/transformers#35204", "agokrani/distillKitPlus#5", "huggingface/transformers#35438")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

ACCUM = 8
LR = 3e-4


def train(watch, steps: int = 36, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    B = 16
    g = torch.Generator().manual_seed(seed)
    with watch(model, optimizer, batch_size=B) as w:
        for step in range(steps):
            optimizer.zero_grad()
            tr_loss = torch.zeros(())
            for _ in range(ACCUM):
                idx = torch.randint(0, len(tokens), (B,), generator=g)
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                (loss / ACCUM).backward()
                tr_loss = tr_loss + loss.detach()
            logged = tr_loss / ACCUM if fixed else tr_loss
            w.observe(step, losses={"clip": logged}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=B, inputs=tokens[idx],
                      extras={"logit_scale": model.logit_scale.exp(), "grad_accum_steps": ACCUM})
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
