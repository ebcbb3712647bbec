"""A tiny CLIP resumed from a checkpoint with a step schedule that restarts from its first stage.

What the user did: their loop sets the learning rate from a DeepLabCut-style `multi_step` list,
[[1e-4, 10], [1e-3, 90], [1e-4, 100]] (a short, gentle warm start, the main rate, a final decay), through
a small `LearningRate` object that moves to the next stage when the iteration *equals* the stage's end.
The job was pre-empted at iteration 15 (checkpoint: model, optimizer, iteration) and relaunched with
resume: model and AdamW state are restored and training continues from iteration 15 to 100. After the
restart the loss sits at ~4.1 (ln(64) = 4.16) for a while and then only creeps down, ending at 0.76-0.79
of ln(B), where the same schedule without the interruption ends at 0.29-0.36.

Why: the `LearningRate` object is not part of the checkpoint; the relaunched script builds a new one with
`current_step = 0`, so it hands out the first stage's rate, 1e-4, and only advances when the iteration
equals 10, an iteration the resumed run never sees again. The rest of the run (85 of 100 iterations)
trains at the warm-start rate, 10x below the rate the schedule meant for it, which is too small for this
model to learn in that many steps. The checkpoint itself is fine: the weights and Adam moments load.

Threads: DeepLabCut/DeepLabCut#1646 ("When stopping and restarting a training from a snapshot the
multi-step starts from the first step definition ... lr will start at .005, but since iterations will
never be at 10000 again, lr will stay at .005"; fixed by DeepLabCut/DeepLabCut#1653, "restarted training
not following the lr schedule"), DeepLabCut/DeepLabCut#1520 (re-training takes the schedule's first rate).

Fix (fixed=True): the learning rate is looked up from the absolute iteration (the stage whose end is
above it), so the resumed run continues in the main stage as it would have without the interruption.

Validation (validate.py --half test23, final loss / ln(64) over the last 5 steps):
  fault  seeds 0/1/2: 0.792 / 0.763 / 0.777 (final 3.294 / 3.172 / 3.231)
  fixed  seeds 0/1/2: 0.356 / 0.294 / 0.313 (final 1.482 / 1.221 / 1.303)

Ground truth: lr_schedule.
"""

from __future__ import annotations

import os
import tempfile

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("DeepLabCut/DeepLabCut#1646", "DeepLabCut/DeepLabCut#1520")
CAUSE = "lr_schedule"
FAMILY = "checkpoint and resume"

B = 64
CFG = {"multi_step": [[1e-4, 10], [1e-3, 90], [1e-4, 100]]}
PREEMPTED_AT = 15


class LearningRate:
    """The schedule object of the user's loop (DeepLabCut's pattern): next stage when the iteration hits
    the current stage's end exactly."""

    def __init__(self, cfg):
        self.steps = cfg["multi_step"]
        self.current_step = 0

    def get_lr(self, iteration):
        lr = self.steps[self.current_step][0]
        if iteration == self.steps[self.current_step][1] and self.current_step < len(self.steps) - 1:
            self.current_step += 1
        return lr


def lr_at(cfg, iteration):
    """Stateless: the stage whose end is above this iteration (what a resumed run needs)."""
    for lr, until in cfg["multi_step"]:
        if iteration < until:
            return lr
    return cfg["multi_step"][-1][0]


def _launch(watch, seed, start, stop, ckpt_path, resume, fixed):
    """One launch of the training script: build, optionally resume, train start..stop, save a checkpoint."""
    model = tiny_clip(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=CFG["multi_step"][0][0])
    if resume:
        ckpt = torch.load(ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start = ckpt["iteration"]
    lr_sched = LearningRate(CFG)

    pixels, ids = image_caption_pairs(1024, seed)
    g = torch.Generator().manual_seed(1000 * seed + start)
    session = watch(model, optimizer, batch_size=B)
    model.train()
    for it in range(start, stop):
        lr = lr_at(CFG, it) if fixed else lr_sched.get_lr(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
        loss = out.loss
        optimizer.zero_grad()
        loss.backward()
        session.observe(it, losses={"clip": loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image)
        optimizer.step()
    session.close()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": stop}, ckpt_path)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as d:
        ckpt_path = os.path.join(d, "snapshot.pt")
        cut = min(PREEMPTED_AT, steps)
        _launch(watch, seed, 0, cut, ckpt_path, resume=False, fixed=fixed)  # pre-empted here
        if steps > cut:
            _launch(watch, seed, cut, steps, ckpt_path, resume=True, fixed=fixed)  # relaunched with resume
