"""BERT-style `warmup_linear` lr schedule with `t_total` counted for one epoch while the run trains for five.

What the user did (huggingface/transformers#324; huggingface/transformers#327 then set the multiplier to 0 past
t_total, with a warning): the pytorch-pretrained-BERT examples set the learning rate by hand each step, `lr_this_step
= lr * warmup_linear(global_step / t_total, warmup_proportion)`, with `warmup_linear(x, warmup) = x / warmup if x <
warmup else 1.0 - x`. The issue reports that "if `t_total` is specified incorrectly (too small), learning rate becomes
negative after t_total", and a user answers that they "just ran into this problem while running BERT on large samples
from run_squad.py" (and suggests computing `num_train_optimization_steps` inside the train loop, from the data it
actually iterates over). Here a user ports that loop to an image-text aligner (perceiver-pytorch Perceiver over
frozen-backbone patch tokens, CLIP loss) and computes `num_train_optimization_steps = len(train_loader) //
gradient_accumulation_steps`, forgetting `* num_train_epochs`, then trains 5 epochs.

Why it fails: for the first epoch (20 steps) the schedule warms up and decays linearly to 0 at step 20 = t_total, and
the model starts to learn. From then on `1.0 - global_step / t_total` is negative and keeps growing: -1 x lr at step
40, -4 x lr at step 100. Nothing clamps it (PyTorch only checks `lr >= 0` when the optimizer is built), so for the
remaining 80 % of the run Adam steps *up* the gradient with an ever larger step: the contrastive loss is pushed back
through ln(B) and far above it (matching pairs scored lowest).

Fix (the root cause the thread points at, t_total must count every optimization step; the maintainer would rather warn
than silently hide a wrong t_total): `num_train_optimization_steps = len(train_loader) // gradient_accumulation_steps
* num_train_epochs`, so the schedule ends at 0 on the last step.

Validation (benchmarks/real_faults/validate.py, 100 steps, B = 32, ln B = 3.4657, torch 2.13 CPU), final CLIP loss
(mean of the last 5 steps) / ln B per seed 0, 1, 2:
- fault: 10.10, 10.30, 10.37 (the lowest loss of the run, at steps 20-23, was 0.50, 0.65, 0.51 x ln B);
- fixed: 0.0685, 0.0854, 0.0795.

Ground truth: lr_schedule.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("huggingface/transformers#324", "huggingface/transformers#327")
CAUSE = "lr_schedule"
FAMILY = "schedules"


def warmup_linear(x, warmup=0.002):
    if x < warmup:
        return x / warmup
    return 1.0 - x


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    train_batch_size, learning_rate, warmup_proportion = 32, 1e-3, 0.1
    gradient_accumulation_steps = 1
    tokens, texts = token_pairs(640, seed=seed)
    train_loader = DataLoader(TensorDataset(tokens, texts), batch_size=train_batch_size, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(seed))
    num_train_epochs = math.ceil(steps / len(train_loader))  # 5 epochs of 20 steps

    model = PerceiverAligner()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    if fixed:
        num_train_optimization_steps = len(train_loader) // gradient_accumulation_steps * num_train_epochs
    else:
        num_train_optimization_steps = len(train_loader) // gradient_accumulation_steps  # one epoch's worth

    session = watch(model, optimizer, batch_size=train_batch_size)
    global_step = 0
    for epoch in range(num_train_epochs):
        for tok, txt_feat in train_loader:
            if global_step >= steps:
                break
            img, txt = model(tok, txt_feat)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(global_step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)

            # modify learning rate with special warm up BERT uses
            lr_this_step = learning_rate * warmup_linear(global_step / num_train_optimization_steps, warmup_proportion)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr_this_step
            optimizer.step()
            optimizer.zero_grad()
            global_step += 1
    session.close()
