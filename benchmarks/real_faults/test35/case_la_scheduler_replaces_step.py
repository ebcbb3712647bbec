"""A flamingo-pytorch resampler aligner whose training script gains an optional learning-rate
scheduler (`--scheduler step`, a `StepLR`). In the batch loop the scheduler's step was put where the
optimizer's step was, `if scheduler: scheduler.step() else: optimizer.step()`, so with a scheduler
the optimizer never steps: the gradients are computed every batch, the lr stays positive, and no
weight ever changes. The loss only moves with the batches.

What the user did: a scheduler added to a script that trained fine with a bare `optimizer.step()`,
wired into the per-batch update as an alternative to it:
`if scheduler: scheduler.step()` / `else: optimizer.step()`, and the run started with
`--optimizer Adam --scheduler step --lr 2e-4`. "However, the loss doesn't come down if I use the
scheduler."

What went wrong and why: the maintainer's answer: "scheduler.step() only changes learning rate, but
does not perform optimizer step. You also have to call optimizer.step(), regardless of the fact that
you use scheduler or not." A scheduler only rewrites `param_group["lr"]`; the update itself is
`optimizer.step()`, which this branch skips on every batch. Nothing fails: the learning rate is
positive and the gradients are there; today's PyTorch only warns that `lr_scheduler.step()` was
called before `optimizer.step()`, a warning about the order that reads as harmless.

The fix: the maintainer's: `if scheduler: scheduler.step()` followed by an unconditional
`optimizer.step()` ("It's working now. Thank you.").

Validation (validate.py, 100 steps, B = 64, chance ln(B) = 4.159; final loss / ln(B)):
fault 1.0808 / 1.0782 / 1.3772 (seeds 0 / 1 / 2; no weight moves, the loss only changes with the
batch), fixed 0.1203 / 0.1056 / 0.1551.

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import argparse

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("ClementPinard/SfmLearner-Pytorch#5",)
CAUSE = "learning_rate_too_low"
FAMILY = "schedules"

B = 64


def get_args(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    parser.add_argument("--scheduler", default="none", choices=["none", "step"])
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lr-step", type=int, default=200, help="StepLR period, in iterations")
    parser.add_argument("--lr-gamma", type=float, default=0.5)
    return parser.parse_args(argv)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    args = get_args(["--optimizer", "adam", "--scheduler", "step", "--lr", "2e-4"])
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner()
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    scheduler = None
    if args.scheduler == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step, gamma=args.lr_gamma)

    session = watch(model, optimizer, batch_size=B)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B)
        if fixed:
            if scheduler:
                scheduler.step()
            optimizer.step()
        elif scheduler:
            scheduler.step()
        else:
            optimizer.step()
    session.close()
