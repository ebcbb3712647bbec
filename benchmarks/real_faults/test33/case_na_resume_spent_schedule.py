"""Checkpoint and resume: training on new pairs is started with `--resume last.ckpt`, which restores the
optimizer and LR-scheduler state of a finished run along with the weights; the restored schedule carries
on from step 60 with the old base lr, so the new run gets the tail of a linear decay (<= 2e-4, 0 after
40 steps) instead of its configured lr 1e-3.

What the user did: a perceiver aligner (perceiver-pytorch Perceiver over frozen-backbone patch tokens,
mean over latents, linear image projection, MLP text head, learnable logit scale) was first trained on an
earlier image/caption set with AdamW (lr 5e-4) and `get_linear_schedule_with_warmup(warmup 6,
max_train_steps 60)`; the run saved `{"model", "optimizer", "lr_scheduler", "step"}` as last.ckpt. To
continue on a new caption set the user reran the same script with the resume path, a higher lr (1e-3)
and max_train_steps set to the new run's 100 steps; the script rebuilds optimizer and scheduler from the
config, then, because a resume path is given, loads all three state dicts, Lightning `ckpt_path` style.

What went wrong and why: `optimizer.load_state_dict` puts back the saved param-group lr (0.0, the end of
the old schedule) and `LambdaLR.load_state_dict` puts back `last_epoch = 60` and the old `base_lrs`
(5e-4); only the lambda (a functools.partial, not saved) is the new one. So the config's lr never
reaches the optimizer: the first step runs at lr 0, then lr = 5e-4 x (100 - 61) / 94 = 2.1e-4 decaying to
0 at the new run's step 40, and 0 for the remaining 60 steps. The model starts from the old run's
weights, which score the new pairs worse than chance (loss ~6), and the 40 short steps only bring the
CLIP loss back to near ln(B). kohya-ss/sd-scripts#1110 and bmaltais/kohya_ss#1924: after resuming from a
saved training state the learning rate stays what it was before, whatever the new setting (the restored
scheduler/optimizer state wins, even over a switch from cosine to constant). In unit8co/darts#1501
("training from ckpt") the maintainers stopped restoring everything from the checkpoint for retraining:
restored "learning rate scheduler and optimizer parameters" are "incoherent/non-updated" attributes, so
the user instantiates a new model and loads only the weights; huggingface/nanotron#253 adds resuming
"without the optimizer state or lr schedule for continual learning" (a new lr schedule for new data).

The fix (the threads'): when the checkpoint is a starting point rather than an interrupted run, load only
the model weights and keep the freshly built optimizer and schedule (lr 1e-3, warm-up then linear decay
over the new run's steps).

Validation (benchmarks/real_faults/validate.py, seeds 0/1/2, 100 steps, B = 32, ln(B) = 3.466):
fault final loss 2.8902 / 3.3807 / 2.9349 (ratio 0.8339 / 0.9755 / 0.8468); fixed 0.2980 / 0.3219 / 0.2991
(ratio 0.0860 / 0.0929 / 0.0863).

Ground truth: lr_schedule.
"""

from __future__ import annotations

import io

import torch
from transformers import get_linear_schedule_with_warmup

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("kohya-ss/sd-scripts#1110", "bmaltais/kohya_ss#1924", "unit8co/darts#1501", "huggingface/nanotron#253")
CAUSE = "lr_schedule"
FAMILY = "checkpoint and resume"

B = 32


def make_training(model, cfg):
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg["warmup_steps"], cfg["max_train_steps"])
    return optimizer, scheduler


def step_batch(model, tokens, texts, idx):
    tok, txt = tokens[idx], texts[idx]
    img, tx = model(tok, txt)
    logits = model.logit_scale.exp() * img @ tx.t()
    return tok, img, tx, logits, clip_loss(logits)


def first_run(seed: int) -> bytes:
    """The earlier run on the old caption set; it finished its schedule and saved last.ckpt."""
    cfg = {"lr": 5e-4, "warmup_steps": 6, "max_train_steps": 60}
    tokens, texts = token_pairs(1024, seed=seed + 1000)
    torch.manual_seed(seed + 1000)
    model = PerceiverAligner()
    optimizer, scheduler = make_training(model, cfg)
    gen = torch.Generator().manual_seed(seed + 1000)
    for step in range(cfg["max_train_steps"]):
        idx = torch.randint(0, len(tokens), (B,), generator=gen)
        loss = step_batch(model, tokens, texts, idx)[-1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(), "step": cfg["max_train_steps"]}, buf)
    return buf.getvalue()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    last_ckpt = first_run(seed)

    # the new run: new caption set, lr raised and a schedule over the new run's steps, resume path given
    cfg = {"lr": 1e-3, "warmup_steps": 6, "max_train_steps": steps}
    tokens, texts = token_pairs(1024, seed=seed)
    torch.manual_seed(seed)
    model = PerceiverAligner()
    optimizer, scheduler = make_training(model, cfg)
    ckpt = torch.load(io.BytesIO(last_ckpt), weights_only=True)
    model.load_state_dict(ckpt["model"])
    if not fixed:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["lr_scheduler"])
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=gen)
        tok, img, tx, logits, loss = step_batch(model, tokens, texts, idx)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": tx}, logits=logits,
                        batch_size=B, inputs=tok)
        optimizer.step()
        scheduler.step()
    session.close()
