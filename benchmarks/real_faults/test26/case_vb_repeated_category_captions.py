"""Every image is paired with its category's caption: the same text appears many times in each batch and
each copy is scored as a negative of the others.

What the user did: fine-tuned a Perceiver-resampler aligner (flamingo-pytorch PerceiverResampler over frozen
patch tokens, projection; linear text projection of a frozen sentence feature) on a categorised image set
whose "captions" are category descriptions ("a photo of a <category>", three categories), with the plain
in-batch CLIP loss, batch 64, targets = arange(B).

What went wrong and why: with three distinct captions in a batch of 64, every image row has ~21 columns
holding exactly the same caption as its own target, and the targets call all but one of them negatives
(likewise every caption row has ~21 images of its category). The best the model can do is split the
probability evenly over the copies: the loss is floored at ~ln(64 / 3) = 3.06 of ln(64) = 4.16 whatever it
learns, and the gradient keeps pushing apart images of the same category (identical texts cannot be told
apart). The pairs are right and the model can learn the categories; the batch composition makes the
objective unreachable.

Threads: huggingface/sentence-transformers#2756 (a maintainer: "where the same `positive` text occurs multiple
times in the batch. This is quite bad, as this sample is now used both as a positive and as an in-batch
negative"; the remedy: keep duplicates of the positive out of the negatives), with the follow-up
huggingface/sentence-transformers#3260 (duplicates have to be identified from the inputs, not from embedding
similarity, and masked).

Fix (fixed=True): mask the in-batch duplicates of each row's own caption (same input text, found from the
caption ids before encoding) out of the softmax, as the threads do, so only genuinely different captions
are negatives.

Validation (validate.py --half test26, seeds 0/1/2, ln(64) = 4.1589): fault final / ln(64) = 0.8096 /
0.8092 / 0.8230 (final 3.37 / 3.37 / 3.42, above the ln(64/3) = 3.06 floor); fixed 0.0737 / 0.0809 / 0.0763.

Ground truth: false_negatives.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/sentence-transformers#2756", "huggingface/sentence-transformers#3260")
CAUSE = "false_negatives"
FAMILY = "batch and candidates"

B = 64
CATEGORIES = 3


def category_dataset(n: int, seed: int):
    """Frozen patch tokens per image, a category per image, and one frozen sentence feature per category
    description (the pooled feature of "a photo of a <category>")."""
    tokens, texts = token_pairs(n, seed)
    category = texts[:, :CATEGORIES].argmax(dim=1)  # the category is visible in the image
    descriptions = torch.stack([texts[category == c].mean(0) for c in range(CATEGORIES)])
    return tokens, category, descriptions


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, category, descriptions = category_dataset(1024, seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed + 1)
    session = watch(model, optimizer, batch_size=B)

    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        caption_ids = category[idx]
        img, txt = model(tokens[idx], descriptions[caption_ids])
        logits = model.logit_scale.exp() * img @ txt.t()
        if fixed:
            same_text = caption_ids[:, None] == caption_ids[None, :]
            duplicates = same_text & ~torch.eye(B, dtype=torch.bool)
            logits = logits.masked_fill(duplicates, float("-inf"))
        loss = clip_loss(logits)

        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                        logits=logits, batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
