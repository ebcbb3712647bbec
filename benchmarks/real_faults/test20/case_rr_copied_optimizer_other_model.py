"""A notebook that compares two resamplers on the same frozen patch tokens: the first cell trains a
flamingo-pytorch PerceiverResampler aligner, the second cell (copied from the first and edited) trains a
perceiver-pytorch aligner, but its optimizer line still reads `torch.optim.Adam(model_a.parameters(), ...)`.

What went wrong and why: the optimizer of the second run holds the first model's parameters. In the second
loop `optimizer.zero_grad()` clears model_a's gradients (they become None), `loss.backward()` fills the
gradients of model_b, and `optimizer.step()` walks model_a's parameters, finds no gradient and skips them. So
model_b receives gradients on every step and none of them is ever applied: its weights stay at their
initialisation and the CLIP loss stays at its starting value for the whole run (above ln(B): unrelated unit
embeddings multiplied by the initial logit scale, 1/0.07).

Thread: rasbt/dora-from-scratch#1: in the LoRA-vs-DoRA notebook the DoRA model was trained with
`torch.optim.Adam(model_lora.parameters())` (copied from the LoRA cell); the fix changes it to
`torch.optim.Adam(model_dora.parameters())`, and the maintainer confirmed it: "omg how did I miss that. This
explains why I got some weird results".

Fix (fixed=True): build the second optimizer from the model the second loop trains:
`torch.optim.Adam(model_b.parameters(), lr=1e-3)`.

Validation (validate.py --half test20, B=32, ln B = 3.4657, 100 steps; final = mean of the last 5 steps):
    seed 0: fault 4.4251 (ratio 1.2768)   fixed 0.1142 (ratio 0.0329)
    seed 1: fault 5.3895 (ratio 1.5551)   fixed 0.1089 (ratio 0.0314)
    seed 2: fault 5.3955 (ratio 1.5568)   fixed 0.1205 (ratio 0.0348)

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, ResamplerAligner, clip_loss, token_pairs

THREADS = ("rasbt/dora-from-scratch#1",)
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer setup"

B = 32


def _batches(n: int, steps: int, g: torch.Generator):
    """Shuffled mini-batches of distinct pairs, a new shuffle per epoch."""
    order, pos = torch.randperm(n, generator=g), 0
    for _ in range(steps):
        if pos + B > n:
            order, pos = torch.randperm(n, generator=g), 0
        yield order[pos:pos + B]
        pos += B


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    g = torch.Generator().manual_seed(seed + 1)

    # --- cell 1: flamingo-pytorch resampler -------------------------------------------------------
    model_a = ResamplerAligner()
    optimizer = torch.optim.Adam(model_a.parameters(), lr=1e-3)
    for idx in _batches(len(tokens), steps, g):
        img, txt = model_a(tokens[idx], texts[idx])
        loss = clip_loss(model_a.logit_scale.exp() * img @ txt.t())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    # --- cell 2: perceiver-pytorch resampler (cell 1 copied, model line edited) -------------------
    model_b = PerceiverAligner()
    if fixed:
        optimizer = torch.optim.Adam(model_b.parameters(), lr=1e-3)
    else:
        optimizer = torch.optim.Adam(model_a.parameters(), lr=1e-3)  # left over from cell 1

    with watch(model_b, optimizer, batch_size=B) as session:
        for step, idx in enumerate(_batches(len(tokens), steps, g)):
            img, txt = model_b(tokens[idx], texts[idx])
            logits = model_b.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, image_embeds=img, text_embeds=txt, logits=logits,
                            batch_size=B, inputs=tokens[idx])
            optimizer.step()
