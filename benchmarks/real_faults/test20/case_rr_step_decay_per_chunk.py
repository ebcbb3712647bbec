"""A step-decay learning-rate schedule written by hand in a loop that assembles its batches from small groups
of pairs (GOTURN's batch-formation regimen): the loader yields 4 image-caption pairs at a time, a running batch
collects them, and the optimizer steps once 32 pairs are in. The user decays the lr "every 5 optimizer steps by
0.8" with `if step > 0 and step % decay_every == 0: lr = lr * gamma`, placed at the top of the outer loop -
which turns once per group, not once per optimizer step.

What went wrong and why: `step` only advances when a batch completes, so for the 8 turns of the loop that fill
the next batch the condition stays true and the decay is applied 8 times at every milestone: 0.8^8 = 0.17
instead of 0.8. By step 15 the lr is 2.4e-6 instead of 2.6e-4, by step 30 1e-8; the model gets about 6 steps'
worth of learning rate and the CLIP loss stays near ln(B) for the rest of the run, while the intended schedule
(41% of lr0 at step 20, 1.4% at step 100) trains it.

Thread: amoudgl/pygoturn#16 ("when itr > 0 and itr % args.lr_decay_step == 0, the lr should become 0.1*lr.
However, the lr will continue decreasing until done==1. And the number of decreasing is related with
batchsize"); the maintainer confirmed it and moved the decay under `if done:` (commit e865ce6, "Fixes #16").

Fix (fixed=True): the same decay, applied once per optimizer step, inside the branch that runs when the
running batch is complete.

Validation (validate.py --half test20, B=32, ln B = 3.4657, 100 steps; final = mean of the last 5 steps):
    seed 0: fault 3.3124 (ratio 0.9558)   fixed 0.9204 (ratio 0.2656)
    seed 1: fault 3.0735 (ratio 0.8868)   fixed 0.8830 (ratio 0.2548)
    seed 2: fault 2.9503 (ratio 0.8513)   fixed 0.9256 (ratio 0.2671)

Ground truth: lr_schedule.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("amoudgl/pygoturn#16",)
CAUSE = "lr_schedule"
FAMILY = "schedules"

B = 32  # pairs per optimizer step
GROUP = 4  # pairs the loader yields at a time


def _groups(n: int, g: torch.Generator):
    """Endless stream of groups of GROUP distinct pair indices, reshuffled every epoch."""
    while True:
        order = torch.randperm(n, generator=g)
        for i in range(0, n - GROUP + 1, GROUP):
            yield order[i:i + GROUP]


def _set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    g = torch.Generator().manual_seed(seed + 1)
    model = ResamplerAligner()
    lr, gamma, decay_every = 5e-4, 0.8, 5
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    stream = _groups(len(tokens), g)

    step, running = 0, []
    with watch(model, optimizer, batch_size=B) as session:
        while step < steps:
            if not fixed and step > 0 and step % decay_every == 0:
                lr = lr * gamma
                _set_lr(optimizer, lr)

            running.append(next(stream))
            done = sum(len(r) for r in running) >= B
            if done:
                if fixed and step > 0 and step % decay_every == 0:
                    lr = lr * gamma
                    _set_lr(optimizer, lr)
                idx = torch.cat(running)
                running = []
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                optimizer.zero_grad()
                loss.backward()
                session.observe(step, losses={"clip": loss}, image_embeds=img, text_embeds=txt,
                                logits=logits, batch_size=B, inputs=tokens[idx])
                optimizer.step()
                step += 1
