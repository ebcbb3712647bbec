"""Cached image features paired with the wrong captions: the frozen backbone's features are computed once
over a *shuffled* DataLoader and stored by batch position; training walks the loader again (a new
shuffle) and takes `cache[i]` for batch i, so every image meets another item's caption.

Thread: huggingface/diffusers#14430 ("Cached latents can be paired with the wrong per-image captions when
shuffle=True": the cache is indexed by the step, not by a sample id; the same correspondence bug was
reported for the Qwen-Image trainer, huggingface/diffusers#12124). Here: a perceiver-pytorch Perceiver
aligner trained on cached patch tokens. The script calls `w.data_signal` on the pairs its loop draws,
as the README suggests for a loss at ln(B) (without that call the tool sees only a collapse: no shared
signal makes uniform logits the optimum, so the embeddings collapse and the cause stays unnamed).
Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("huggingface/diffusers#14430", "huggingface/diffusers#12124")
CAUSE = "misaligned_pairs"
FAMILY = "data_labels"
BATCH = 32


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(seed=seed)
    loader = DataLoader(TensorDataset(tokens, texts), batch_size=BATCH, shuffle=True, drop_last=True)
    cache = [tok.clone() for tok, _ in loader]  # "encode once": the backbone output of each batch, by position
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        # the README's data check, on pairs as the loop below draws them (the first 8 batches)
        seen = [(cache[i], txt_in) for i, (_, txt_in) in zip(range(8), loader)]
        w.data_signal(torch.cat([a for a, _ in seen]), torch.cat([b for _, b in seen]))
        while step < steps:
            for i, (_, txt_in) in enumerate(loader):  # BUG: a new shuffle, but cache[i] is from the old one
                img, txt = model(cache[i], txt_in)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, inputs=cache[i], extras={"logit_scale": model.logit_scale.exp()})
                opt.step()
                step += 1
                if step == steps:
                    break
