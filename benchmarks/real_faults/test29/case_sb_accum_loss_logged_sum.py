"""Gradient accumulation in a contrastive alignment loop where the logged training loss is the sum of the
micro-batch losses, never divided by the number of accumulation steps: the curve reads 4x the objective.

What the user did: a perceiver-pytorch Perceiver (latent cross-attention over frozen patch tokens) -> mean
over latents -> projection, a small text MLP, a learnable logit scale, trained with the symmetric InfoNCE
loss. Memory allows 16 pairs per forward, so each optimizer step accumulates 4 micro-batches of 16: each
micro-batch loss is divided by 4 before `backward()` (the gradient is right), and for logging the loop keeps
`tr_loss += loss.detach()` over the micro-batches and reports `tr_loss` at every optimizer step.

What went wrong and why: the objective at every step is the mean of the 4 micro-batch losses, each scored
over 16 candidates (chance ln 16 = 2.77). The logged number is their sum: it starts at 16-18 (4x an initial
3.9-4.5), "a very large number while it decreases", stays above ln 16 for the first 17-18 steps while the
logits' own loss is already well below it, and would double again if the accumulation count doubled. At
every step it misstates the loss the logits actually give by the accumulation factor. Nothing is wrong with
the training itself; what is wrong is the number the user reads and compares against chance.

Thread: huggingface/transformers#9613 (TFTrainer's `training_loss` "shows a very large number while it
decreases. And it is doubled with twice the gradient_accumulation_steps"; the fix makes the logged loss
account for `gradient_accumulation_steps` (and `n_replicas`) like the PyTorch Trainer, i.e. the mean over
the accumulated micro-batches).

Fix (fixed=True): log `tr_loss / accumulation_steps`, the mean micro-batch loss that was back-propagated.

Validation (validate.py --half test29, seeds 0/1/2, 100 optimizer steps of 4 x 16, ln(16) = 2.7726), on the
logged `clip` value; both runs train identically, so the fixed run's value is also the fault run's true loss:
    fault (logged sum):  first 15.76 / 17.28 / 18.20, final 0.2683 / 0.2459 / 0.2477
                         -> ratio 0.097 / 0.089 / 0.089, exactly 4.00x the objective at every step
    fixed (logged mean): first 3.94 / 4.32 / 4.55, final 0.0671 / 0.0615 / 0.0619
                         -> ratio 0.024 / 0.022 / 0.022

Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("huggingface/transformers#9613",)
CAUSE = "logging_misstates_loss"
FAMILY = "logging"

MICRO_B = 16  # pairs per forward pass
ACCUM = 4  # gradient_accumulation_steps: 64 pairs per optimizer step


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    tokens, texts = token_pairs(4096, seed)
    torch.manual_seed(seed)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=MICRO_B,
                                         shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    batches = iter(loader)
    session = watch(model, optimizer, batch_size=MICRO_B)
    for step in range(steps):
        tr_loss = torch.zeros(())
        for _ in range(ACCUM):
            try:
                tok, txt = next(batches)
            except StopIteration:
                batches = iter(loader)
                tok, txt = next(batches)
            image_embeds, text_embeds = model(tok, txt)
            logits = model.logit_scale.exp() * image_embeds @ text_embeds.t()
            loss = clip_loss(logits)
            (loss / ACCUM).backward()
            tr_loss += loss.detach()
        logged = tr_loss / ACCUM if fixed else tr_loss
        session.observe(step, losses={"clip": logged},
                        embeddings={"image": image_embeds, "text": text_embeds}, logits=logits,
                        batch_size=MICRO_B, inputs=tok)
        optimizer.step()
        optimizer.zero_grad()
    session.close()
