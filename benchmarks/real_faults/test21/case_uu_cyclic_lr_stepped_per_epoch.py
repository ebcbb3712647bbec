"""Schedules: a per-batch cyclical LR schedule stepped once per epoch.

What the user did: an image-text alignment loop (flamingo-pytorch PerceiverResampler + projections, CLIP
loss) with AdamW and `torch.optim.lr_scheduler.CyclicLR(base_lr=1e-6, max_lr=2e-3, step_size_up=8 *
batches_per_epoch)`: the triangular cycle is sized in *batches* (Smith's recipe: 2-10 epochs of
iterations per half cycle), but `scheduler.step()` is called at the end of each epoch, where the epoch-based
schedulers of their previous script were stepped.

What went wrong and why: the schedule advances one of its batch steps per epoch. Over the run it climbs only
`epochs / step_size_up` of its first half-cycle, so the learning rate stays within ~1e-6..5e-5, far below
the 2e-3 the cycle was meant to reach: the weights hardly move and the CLIP loss stays near chance. The
thread: with a CyclicLR the lr was constant within each epoch and barely changed, because `step()` was called
once per epoch instead of once per batch; the maintainers' answer: step the scheduler every batch
(`"interval": "step"`).

Thread: Lightning-AI/pytorch-lightning#5631 (lr_scheduler step() called after every epoch instead of after
every batch, with CyclicLR).

Fix (fixed=True): `scheduler.step()` after every `optimizer.step()`.

Validation (validate.py, 100 steps = 5 epochs x 20 batches, B=32, ln B = 3.4657; final loss / ln B):
fault seed 0/1/2: 1.020 / 0.950 / 0.957; fixed seed 0/1/2: 0.035 / 0.039 / 0.035.

Ground truth: lr_schedule.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("Lightning-AI/pytorch-lightning#5631",)
CAUSE = "lr_schedule"
FAMILY = "schedules"

B = 32
BATCHES_PER_EPOCH = 20


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=1e-6, max_lr=2e-3,
                                                  step_size_up=8 * BATCHES_PER_EPOCH, cycle_momentum=False)
    g = torch.Generator().manual_seed(seed)
    epochs = max(1, steps // BATCHES_PER_EPOCH)
    step = 0
    with watch(model, optimizer, batch_size=B) as session:
        for epoch in range(epochs):
            perm = torch.randperm(len(tokens), generator=g)
            for b in range(BATCHES_PER_EPOCH):
                idx = perm[b * B:(b + 1) * B]
                img, txt = model(tokens[idx], texts[idx])
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                optimizer.zero_grad()
                loss.backward()
                session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                                logits=logits, batch_size=B, inputs=tokens[idx])
                optimizer.step()
                if fixed:
                    scheduler.step()  # the fix: a batch-sized cycle is stepped every batch
                step += 1
            if not fixed:
                scheduler.step()  # the bug: once per epoch
