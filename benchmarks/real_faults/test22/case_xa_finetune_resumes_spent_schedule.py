"""Fine-tuning on new data by *resuming* a finished run's checkpoint: the restored schedule keeps lr at min_lr.

What the user did: job 1 trained a perceiver-pytorch alignment model (patch tokens -> Perceiver latents ->
projection, text features -> MLP, CLIP loss) with AdamW and a warmup + cosine schedule down to
min_lr = 1e-6 over its planned steps, and saved a full training checkpoint (model, optimizer, scheduler,
step) at the end. Job 2 fine-tunes that model on the user's own image-caption pairs. It builds the same
optimizer and schedule for its own length and then restores everything from the checkpoint, the way a
resume does (`trainer.fit(model, ckpt_path=...)` in Lightning/NeMo, "full" checkpoint restore in the TF
Object Detection API): model, optimizer state *and* scheduler state.

What went wrong and why: the scheduler state carries the step counter (`last_epoch`) of job 1, which
already reached the end of its schedule. Job 2's schedule is evaluated at that step, past its own
horizon, so it returns min_lr (1e-6, 1000x below the fine-tuning lr) for the whole fine-tuning run (the
optimizer state also brings back job 1's decayed lr). The pretrained weights do not transfer to the new
pairs (on them the loss starts at 5.1-6.8, above ln(B): confident and wrong), and with lr 1e-6 the weights
cannot move: the loss stays there for the whole job while the log shows a constant learning rate of 1e-6.

Threads:
- NVIDIA-NeMo/Speech#4867: fine-tuning launched with `trainer.fit(model, ckpt_path="pretrained/epoch=39.ckpt")`,
  "according to the graphs learning_rate = 1e-6 throughout the training" (NoamAnnealing, min_lr 1e-6); the
  issue went stale without a reply. The maintainers' PR NVIDIA-NeMo/Speech#4472 states the mechanism:
  "Upon resuming from a ckpt max_steps are loaded from the ckpt, and if the user wishes to train for more
  epochs, they will unexpectedly get min_lr".
- tensorflow/models#10468: continuing an EfficientDet run on a custom dataset from its latest full
  checkpoint, "the learning_rate stays at 0" and the model "isn't updating any of its weights" (the
  restored global step is already past the end of the decay schedule).

Fix (fixed=True): initialise from the pretrained *weights* only (load the model state dict) and start a
fresh optimizer and schedule for the fine-tuning run.

Validation (validate.py, 50 + 50 steps, B=32, final loss = mean of the last 5 steps of job 2,
ln(32) = 3.4657):
- fault: final/ln(B) = 1.591, 1.976, 1.628 on seeds 0, 1, 2 (job 2 runs at lr 1e-6 throughout; job 1
  itself ends at loss ~0.74, 0.21 ln(B), on seed 0);
- fixed: final/ln(B) = 0.232, 0.304, 0.203.

Ground truth: lr_schedule.
"""

from __future__ import annotations

import io
import math

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("NVIDIA-NeMo/Speech#4867", "NVIDIA-NeMo/Speech#4472", "tensorflow/models#10468")
CAUSE = "lr_schedule"
FAMILY = "checkpoint and resume"

B = 32
LR = 1e-3
MIN_LR = 1e-6
WARMUP = 5


def make_optimizer_and_schedule(model, max_steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.98), weight_decay=0.01)

    def lr_lambda(step):
        if step < WARMUP:
            return (step + 1) / WARMUP
        if step >= max_steps:
            return MIN_LR / LR
        progress = (step - WARMUP) / max(1, max_steps - WARMUP)
        return max(MIN_LR / LR, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def run_job(model, optimizer, scheduler, session, tokens, texts, steps, g, step0):
    for i in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step0 + i, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                        logits=logits, batch_size=B, inputs=tokens[idx])
        optimizer.step()
        scheduler.step()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n1 = steps // 2
    n2 = steps - n1

    # job 1: train on the first dataset, save a full checkpoint at the end
    tokens_a, texts_a = token_pairs(1024, seed)
    model = PerceiverAligner()
    optimizer, scheduler = make_optimizer_and_schedule(model, max_steps=n1)
    with watch(model, optimizer, batch_size=B) as session:
        run_job(model, optimizer, scheduler, session, tokens_a, texts_a, n1, g, 0)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": n1}, buf)

    # job 2: fine-tune the pretrained model on the user's own pairs
    tokens_b, texts_b = token_pairs(1024, seed + 1000)
    buf.seek(0)
    ckpt = torch.load(buf)
    model = PerceiverAligner()
    optimizer, scheduler = make_optimizer_and_schedule(model, max_steps=n2)
    model.load_state_dict(ckpt["model"])
    if not fixed:  # resume-style restore of the whole training state
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    start = 0 if fixed else ckpt["step"]  # a resume also continues the step counter
    with watch(model, optimizer, batch_size=B) as session:
        run_job(model, optimizer, scheduler, session, tokens_b, texts_b, n2, g, start)
