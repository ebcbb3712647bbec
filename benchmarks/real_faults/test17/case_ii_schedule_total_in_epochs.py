"""A linear warm-up/decay schedule whose length was given in epochs while it is stepped every batch: the
learning rate reaches 0 after the first few batches and stays there, so the aligner never leaves chance.

What the user did: trained a flamingo-pytorch PerceiverResampler aligner (patch tokens -> resampler ->
projection; pooled text features -> projection; learnable logit scale) with AdamW and the usual
transformers recipe, `get_linear_schedule_with_warmup(optimizer, num_warmup_steps=int(0.1 * total),
num_training_steps=total)`, calling `scheduler.step()` after every `optimizer.step()`. But `total` was
computed as the number of *epochs* (`args.num_train_epochs`), not epochs x batches per epoch: with 4 epochs
the warm-up is 0 steps and the decay is over after 4 optimizer steps; from batch 4 on the multiplier is
clamped at 0.0 for the rest of the run. Nothing crashes; the loss just sits at ln(B).

The threads: huggingface/transformers#556, "Training beyond specified 't_total' steps with schedule
'warmup_linear'. Learning rate set to 0.0. Please set 't_total' of BertAdam correctly." (there the total
was computed with `int()` where a ceiling was needed, so the run outlived its schedule), and deepset-ai/FARM#46, "The
number of total steps is currently wrongly calculated ... this will result in LR = 0 for the last few
steps", with the same warning. Here the total is off by the factor len(loader), so LR = 0 for all but the
first 4 steps.

Thread: huggingface/transformers#556
Thread: deepset-ai/FARM#46
Fix: num_training_steps = epochs * len(loader) (optimizer steps, not epochs); warm-up 10 % of that.

Validation (benchmarks/real_faults/validate.py --half test17 --only case_ii_schedule_total_in_epochs,
seeds 0 1 2, B = 32, ln(B) = 3.4657, 128 steps): fault final loss / ln(B) = 0.9814 / 0.9360 / 0.8920
(final 3.401 / 3.244 / 3.091 from a first loss of 4.99 / 4.65 / 4.67: the lr is 0 from step 4 on, what was
learned in the first 4 steps is all there is); fixed 0.0362 / 0.0419 / 0.0348.

Ground truth: lr_schedule.
"""

from __future__ import annotations

import pathlib

import torch
from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/transformers#556", "deepset-ai/FARM#46")
CAUSE = "lr_schedule"
FAMILY = "lr schedule"

B, EPOCHS, LR = 32, 4, 1e-3


def train(watch, steps: int = 128, seed: int = 0, fixed: bool = False) -> None:
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    per_epoch = len(tokens) // B
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    # the bug: the schedule's length in epochs, while scheduler.step() runs once per batch
    total = EPOCHS * per_epoch if fixed else EPOCHS
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=int(0.1 * total),
                                                num_training_steps=total)
    g = torch.Generator().manual_seed(seed)
    step = 0
    with watch(model, optimizer, batch_size=B) as w:
        for _epoch in range(EPOCHS):
            order = torch.randperm(len(tokens), generator=g)
            for b in range(per_epoch):
                if step >= steps:
                    return
                idx = order[b * B:(b + 1) * B]
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                optimizer.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=B, inputs=tokens[idx],
                          extras={"lr": scheduler.get_last_lr()[0], "logit_scale": model.logit_scale.exp()})
                optimizer.step()
                scheduler.step()
                step += 1


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
