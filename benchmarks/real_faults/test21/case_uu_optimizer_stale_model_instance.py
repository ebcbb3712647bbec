"""Optimizer setup: the optimizer was built on a model instance that is not the one being trained.

What the user did: a vision->text alignment script (flamingo-pytorch PerceiverResampler over frozen patch
tokens, linear text projection, CLIP loss). Refactoring it, they build the model and its AdamW optimizer in
a setup block, and further down, before the training loop, instantiate the model again "for a clean init
per seed" (`torch.manual_seed(seed); model = ResamplerAligner()`). The loop runs the forward/backward on
the second instance and calls `optimizer.step()`.

What went wrong and why: the optimizer holds the parameter tensors of the first instance. The second
instance's parameters receive gradients on every backward but belong to no optimizer param group, so
`optimizer.step()` updates a model nobody calls (whose gradients are None: nothing moves at all) and the
trained model keeps its random init; the CLIP loss stays at chance. Threads: pytorch/pytorch#14467 (after a
refactor the model was created twice, the optimizer knew the parameters of the other one and training
silently did nothing; asks for a warning when the optimizer's parameters are not the model's),
skorch-dev/skorch#317 (module weights don't update after `copy.deepcopy`: the optimizer still points at
the original module's parameters; fixed by re-initialising the optimizer on the copy).

Fix (fixed=True): build the optimizer from the parameters of the model that is actually trained (after the
last instantiation).

Validation (validate.py, 100 steps, B=32, ln B = 3.4657; final loss / ln B):
fault seed 0/1/2: 1.506 / 1.423 / 1.466 (above chance: the logit scale sharpens random rows);
fixed seed 0/1/2: 0.024 / 0.028 / 0.026.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("pytorch/pytorch#14467", "skorch-dev/skorch#317")
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer setup"

B = 32


def build(lr: float = 1e-3):
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    return model, optimizer


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    tokens, texts = token_pairs(1024, seed)
    model, optimizer = build()

    # ... later, before the loop: a fresh, seeded init for this run
    torch.manual_seed(seed)
    model = ResamplerAligner()
    if fixed:  # the fix: the optimizer must hold the parameters of the model being trained
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    g = torch.Generator().manual_seed(seed)
    with watch(model, optimizer, batch_size=B) as session:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tokens[idx])
            optimizer.step()
            optimizer.zero_grad()
