"""Embeddings that enter the logits without L2 normalisation: the logits are raw dot products times 14.3,
so their scale follows the embedding norms and the softmax saturates.

Threads: Zasder3/train-CLIP#3 ("The embeddings must be l2 normalized before calculating the logits. This
fix corrects both the loss that is logged and the training loss"), moein-shariatnia/OpenAI-CLIP#10
("Unnormalized image and text projected vectors"). Here: a perceiver-pytorch Perceiver aligner whose
projections feed the similarity directly.
Ground truth: not_normalised.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("Zasder3/train-CLIP#3", "moein-shariatnia/OpenAI-CLIP#10")
CAUSE = "not_normalised"
FAMILY = "normalisation_temperature"
BATCH = 32


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(seed=seed)
    model = PerceiverAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            lat = model.perceiver(tokens[idx], return_embeddings=True)
            img, txt = model.proj(lat.mean(1)), model.text(texts[idx])  # BUG: no F.normalize before the similarity
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
