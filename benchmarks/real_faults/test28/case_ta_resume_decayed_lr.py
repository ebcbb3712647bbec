"""Fine-tuning resumed from a pretraining checkpoint inherits its optimizer state: the lr is already decayed to ~5e-6.

What the user did: a perceiver-pytorch Perceiver over frozen-backbone patch tokens, mean over latents, a projection,
a small text MLP and a learnable logit scale (`common.PerceiverAligner`), trained contrastively with AdamW and
`ExponentialLR(gamma=lr_decay)` stepped once per epoch, checkpointing `{"model", "optim", "epoch"}` the way the
HiFi-GAN train.py does. An upstream run (100 short epochs on its own pairs, lr 1e-3, lr_decay 0.95) produced the
checkpoint. To adapt it to new data (other pairs: the upstream model scores them no better than chance) they ran the
same script "from the checkpoint": `model.load_state_dict`, `optimizer.load_state_dict(ckpt["optim"])` and
`ExponentialLR(optimizer, gamma=lr_decay, last_epoch=ckpt["epoch"])`, batch 32, 100 steps.

What went wrong and why: `optimizer.load_state_dict` restores the param groups as they were saved, lr included, and
the scheduler resumes from the saved epoch: the fine-tune starts at 1e-3 * 0.95^100 = 5.9e-6 and keeps decaying
(5.1e-6 by the end). At that lr an Adam step moves each weight by ~5e-6, so 100 steps cannot adapt the model: the
loss on the new pairs stays between 4.4 and 9.0 (above ln(B) = 3.47: the upstream logit scale is large) for the
whole run.

Threads: jik876/hifi-gan#39 ("If I train the model with 2.5 million steps ... the training step will drop to 3e-7
... it is also impossible to adapt other speakers at such a checkpoint, because the learning step is too small";
the author: "I would like to recommend adjusting the learning rate loaded from a checkpoint during transfer
learning"), jik876/hifi-gan#70 (fine-tuning from the released checkpoint "starting with a learning_rate that has
already had a very large ExponentialLR lr_decay already applied to it").

Fix (the author's): after loading the checkpoint, set the learning rate loaded with the optimizer state back to the
fine-tuning lr (`lr` and `initial_lr` of every group) and start the decay schedule afresh (`last_epoch=-1`).

Validation (validate.py, 100 steps, B = 32, ln(B) = 3.4657; final = mean of the last 5 steps):
    seed 0: fault 6.4343 (1.857 ln B), fixed 0.0998 (0.029 ln B)
    seed 1: fault 6.3803 (1.841 ln B), fixed 0.0757 (0.022 ln B)
    seed 2: fault 5.0048 (1.444 ln B), fixed 0.0693 (0.020 ln B)

Ground truth: lr_schedule.
"""

from __future__ import annotations

import io

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("jik876/hifi-gan#39", "jik876/hifi-gan#70")
CAUSE = "lr_schedule"
FAMILY = "checkpoint and resume"

B = 32
LR = 1e-3
LR_DECAY = 0.95  # per epoch, as in the config the upstream run used


def _upstream_checkpoint(seed: int) -> io.BytesIO:
    """The earlier run the checkpoint comes from: 100 epochs over its own 64 pairs, lr decayed once per epoch."""
    torch.manual_seed(seed + 1000)
    tokens, texts = token_pairs(64, seed + 1000)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.8, 0.99))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=LR_DECAY)
    epochs = 100
    for _ in range(epochs):
        order = torch.randperm(len(tokens))
        for start in range(0, len(order), B):
            idx = order[start:start + B]
            img, txt = model(tokens[idx], texts[idx])
            loss = clip_loss(model.logit_scale.exp() * img @ txt.t())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "epoch": epochs - 1}, buf)
    buf.seek(0)
    return buf


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    checkpoint_file = _upstream_checkpoint(seed)

    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)  # the new data to adapt to
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.8, 0.99))

    ckpt = torch.load(checkpoint_file)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optim"])
    last_epoch = ckpt["epoch"]
    if fixed:  # the author's advice: adjust the lr loaded from the checkpoint, restart the decay
        for group in optimizer.param_groups:
            group["lr"] = LR
            group["initial_lr"] = LR
        last_epoch = -1
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=LR_DECAY, last_epoch=last_epoch)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        order = torch.randperm(len(tokens), generator=gen)
        for start in range(0, len(order) - B + 1, B):
            idx = order[start:start + B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                            logits=logits, batch_size=B, inputs=tokens[idx])
            optimizer.step()
            step += 1
            if step >= steps:
                break
        scheduler.step()
    session.close()
