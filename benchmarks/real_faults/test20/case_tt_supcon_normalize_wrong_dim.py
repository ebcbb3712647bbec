"""Image and caption embeddings stacked as the two "views" of a SupCon / NT-Xent loss and L2-normalised
along the views axis (dim=1) instead of the feature axis: the rows that enter the similarity matrix are
not unit vectors, the scaled logits span hundreds of nats and the loss is NaN from the first step.

What the user did: a flamingo-pytorch PerceiverResampler aligner (common.ResamplerAligner's
`encode_image` for the image embedding, its linear `text` head for the caption embedding, both before any
normalisation) trained with the SupContrast-style loss in its unsupervised (SimCLR) mode: the pair's image
and caption embeddings are stacked as `features` of shape [bsz, n_views=2, dim], each row's positive is
its pair-mate among the 2B-1 other rows, temperature 0.07. Before the loss the user normalises with
`F.normalize(features, dim=1)`.

What went wrong and why: on a [bsz, n_views, dim] tensor, dim=1 is the views axis. Each feature coordinate
is normalised across the two views (image_k, caption_k) instead of each embedding across its features, so
the rows have norm about sqrt(dim / 2) instead of 1 (3.7 here, dim 32). Their dot products / 0.07 are in
the hundreds; the loss subtracts each row's maximum (its self-similarity, about dim / 2 / 0.07) and then
exponentiates, so in many rows (22 of the 64 at step 0, seed 0) every other entry underflows to exactly 0
in float32: that row's denominator is log(0) = -inf and the masked mean of its log-probabilities is NaN. NaN gradients then turn every parameter NaN on the first
AdamW step.

The thread: HobbitLong/SupContrast#10: `features = F.normalize(features, dim=1)` on a [256, 2, 128]
tensor gave a NaN loss "because some values in exp_logits.sum(1, keepdim=True) are zero"; the answer:
"You're normalizing along the n_views dimension, but you need to be normalizing along the feature
dimension ... change dim=1 to dim=2", confirmed by the user. Root cause: the embeddings are not L2
normalised (per embedding) when they enter the logits.

The fix (fixed=True): `F.normalize(features, dim=2)` (the feature axis).

Validation (validate.py, seeds 0/1/2, 100 steps, B=32, final loss / ln(B); the SimCLR-mode loss scores
each row against 2B-1 = 63 candidates, so its own chance level is ln 63 = 4.143, ratio 1.195):
    fault non-finite / non-finite / non-finite (the loss is NaN from step 0 on every seed)
    fixed 0.0438 / 0.0541 / 0.0458 (final 0.152 / 0.188 / 0.159; first step 12.8 / 13.2 / 13.1, the resampler's
          image embeddings being near-identical at init)

Ground truth: not_normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import ResamplerAligner, token_pairs

THREADS = ("HobbitLong/SupContrast#10",)
CAUSE = "not_normalised"
FAMILY = "normalisation and temperature"

B = 32


def supcon_loss(features: torch.Tensor, temperature: float = 0.07, base_temperature: float = 0.07) -> torch.Tensor:
    """SupContrast-style loss without labels (SimCLR mode): features [bsz, n_views, dim]; each row's
    positives are the other views of the same item."""
    bsz, n_views = features.shape[:2]
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)  # (n_views * bsz, dim)
    n = len(contrast)
    positives = torch.eye(bsz).repeat(n_views, n_views)
    not_self = 1.0 - torch.eye(n)
    positives = positives * not_self

    logits = contrast @ contrast.t() / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # numerical stability
    exp_logits = torch.exp(logits) * not_self
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (positives * log_prob).sum(1) / positives.sum(1)
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)

    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=gen)
        tok, txt_in = tokens[idx], texts[idx]
        features = torch.stack([model.encode_image(tok), model.text(txt_in)], dim=1)  # [bsz, n_views=2, dim]
        features = F.normalize(features, dim=2 if fixed else 1)
        loss = supcon_loss(features)
        loss.backward()
        session.observe(step, losses={"contrastive": loss},
                        embeddings={"image": features[:, 0], "text": features[:, 1]}, batch_size=B, inputs=tok)
        optimizer.step()
        optimizer.zero_grad()
    session.close()
