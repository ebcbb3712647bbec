"""A perceiver-pytorch aligner fine-tuned the fastai way: a splitter lists the parameter groups for
discriminative learning rates, `freeze()` leaves only the last group trainable for the first stage,
and the optimizer is built from the splitter's groups. The splitter lists the Perceiver's stages
and its parameter-free output stage, and nothing of the projection heads, so the heads are in no
param group: no tensor ever changes and the loss stays at its initial level, above ln(B), while
the heads' gradients go nowhere.

What the user did: a `model_split` that returns the body's stages one by one and ends with a module
that has no parameters (`L(m.body[0], ..., m.body[7], m.drop).map(params)`), then
`Learner(..., splitter=model_split)` and `learn.freeze()` before `fit_one_cycle`. Here: the
Perceiver's two blocks and its output stage (`to_logits`, an Identity when there is no classifier
head) as the groups, every group but the last frozen, `Adam` over the groups.

What went wrong and why: the optimizer only ever sees what the splitter returns. The thread: "Adam
cannot get head_params, and cannot update head params!", with a loss that barely moves over three
epochs (48.92, 48.90, 48.74). The last group is the parameter-free stage, so after the freeze no
tensor the optimizer holds can change, while the heads (`proj`, `text`, `logit_scale`) and the
latents, which the splitter never listed, get gradients every step and are never stepped. Nothing
raises: an optimizer accepts an empty group and frozen tensors.

The fix: the thread's `model_split` that returns two groups, the body's parameters and the head's
(`return L(body_params, head_params)`); `freeze()` then trains the head on the frozen body.

Validation (validate.py, 100 steps, B = 64, chance ln(B) = 4.159; final loss / ln(B)):
fault 1.2107 / 1.3298 / 1.2915 (seeds 0 / 1 / 2; above 1 because the random embeddings at
the initial logit scale score worse than uniform, and no tensor ever changes), fixed 0.0261 / 0.0352 / 0.0267.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("fastai/course-v3#598",)
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer setup"

B = 64
LR = 3e-3


def params(module):
    return [p for p in module.parameters()]


def model_split(m):
    p = m.perceiver
    return [params(p.layers[0]), params(p.layers[1]), params(p.to_logits)]


def model_split_fixed(m):
    p = m.perceiver
    body_params = [p.latents] + params(p.layers) + params(p.to_logits)
    head_params = params(m.proj) + params(m.text) + [m.logit_scale]
    return [body_params, head_params]


def freeze(groups):
    """fastai's `freeze()`: every group but the last stops training."""
    for group in groups[:-1]:
        for t in group:
            t.requires_grad_(False)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = PerceiverAligner()
    groups = model_split_fixed(model) if fixed else model_split(model)
    freeze(groups)
    optimizer = torch.optim.Adam([{"params": g} for g in groups], lr=LR)

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
        optimizer.step()
    session.close()
