"""The optimizer is built on one model instance and the loop trains a second one, created again before training.

What the user did: a notebook-style script. Right after defining the aligner (a perceiver-pytorch Perceiver over
frozen patch tokens, a small text MLP, CLIP loss) it instantiates `model = PerceiverAligner()` and builds
`optimizer = torch.optim.AdamW(model.parameters(), lr=...)` next to it; further down, in the training-setup
cell, it instantiates `model = PerceiverAligner()` again (a "fresh model for the run") and trains that one with
the optimizer from above.

What went wrong and why: `model.parameters()` handed the optimizer the tensors of the FIRST instance. The second
instance is a new set of tensors: backward fills their `.grad`, but they are in no param group, so
`optimizer.step()` updates the orphaned first model (whose `.grad` is None: AdamW skips it) and the model that
computes the loss never changes. The loss stays at its random-init level (above ln(B): the 14.3 logit scale on
random embeddings), moving only with the batches drawn, for the whole run. practical-pytorch#21 is this bug:
replacing the tutorial's manual `p.data.add_(-lr, p.grad)` update by `optimizer.step()` made the char-RNN stop
learning ("the results are very bad... most of the results are predicted wrong"), because the notebook
instantiated `rnn` twice and the optimizer held the first one; the same user then removed the second
instantiation from the official tutorial (pytorch/tutorials#86: "rnn was initialized twice ... this might lead
to a bug if using optimizer.step() to update weights without noticing there're two rnn").

The fix (fixed=True): build the optimizer on the instance that is trained (after the last instantiation).

Validation (validate.py --half test30, stand-in watch, CPU, 1 thread; final = mean of the last 5 steps,
B = 32, ln B = 3.4657):
    seed 0: fault 5.3059 (1.531 ln B), fixed 0.1273 (0.037 ln B)
    seed 1: fault 4.1413 (1.195 ln B), fixed 0.1111 (0.032 ln B)
    seed 2: fault 4.7505 (1.371 ln B), fixed 0.1311 (0.038 ln B)

Threads: spro/practical-pytorch#21, pytorch/tutorials#86.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("spro/practical-pytorch#21", "pytorch/tutorials#86")
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer setup"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    tokens, texts = token_pairs(1024, seed=seed)

    # cell: model definition + optimizer
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    # cell: training setup, further down the notebook
    model = PerceiverAligner()  # a second instance: the one the loop trains
    if fixed:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

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
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
