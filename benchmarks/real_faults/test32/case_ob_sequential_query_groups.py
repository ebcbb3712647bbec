"""One-query-many-images annotations read in file order: every batch is a few queries, each repeated many times.

What the user did: text-to-image retrieval fine-tuning on an e-commerce style dataset (MUGE-like): each search
query is annotated with several product images, and the annotation file is expanded into one (image, query)
pair per image, grouped by query (all images of query 1, then all of query 2, ...). The alignment model
(frozen-backbone patch tokens -> flamingo-pytorch PerceiverResampler -> projection; query features ->
projection; CLIP loss with in-batch negatives, `labels = arange(B)`) is fed by a DataLoader built with a
`SequentialSampler` (no shuffling), the sampler the codebase used for its in-batch evaluation.

What went wrong and why: read in order, a batch of 32 pairs holds only 2 distinct queries, each 16 times. The
loss scores every row against the 31 other texts of the batch as negatives, but 15 of them are the very same
query: the correct image->text target is one of 16 identical columns, and for the text->image side 16 identical
rows must each pick a different image. Whatever the model does, the loss cannot go below about ln(16) = 2.77 of
ln(32) = 3.47: the duplicates are false negatives and the in-batch accuracy sits near 1/16. The loss curve is
flat near chance and the user concludes the model does not learn.

The threads: OFA-Sys/Chinese-CLIP#28 (fine-tuning on MUGE, the in-batch validation loss/accuracy never move,
Image2Text Acc stuck around 32%), OFA-Sys/Chinese-CLIP#29 (the maintainers' diagnosis and fix: with a sequential
sampler and one text annotated with several images, several pairs in a local batch share the same text, and
the in-batch metric that takes each sample's own pair as the only positive cannot handle it; the loader is
changed to a deterministically shuffled sampler so that a batch rarely holds the same text twice).

The fix (fixed=True): shuffle the pairs (`shuffle=True`), so a batch of 32 drawn from 128 queries rarely
contains the same query twice.

Validation (validate.py, 100 steps, B = 32, final loss / ln(32)): fault 0.801 / 0.820 / 0.803 (seeds 0/1/2),
fixed 0.062 / 0.071 / 0.042.

Ground truth: false_negatives.
"""

from __future__ import annotations

import torch
from common import ResamplerAligner, clip_loss, token_pairs
from torch.utils.data import DataLoader, SequentialSampler, TensorDataset

THREADS = ("OFA-Sys/Chinese-CLIP#28", "OFA-Sys/Chinese-CLIP#29")
CAUSE = "false_negatives"
FAMILY = "batch and candidates"

B = 32
QUERIES, IMAGES_PER_QUERY = 128, 16


def product_search_pairs(seed: int):
    """(image tokens, query features) pairs, grouped by query as in the annotation file: the images of one
    query share its concepts (plus their own view noise); the query text is the same for all of them."""
    item_tokens, query_feats = token_pairs(QUERIES, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    images = item_tokens.repeat_interleave(IMAGES_PER_QUERY, dim=0)
    images = images + 0.5 * torch.randn(images.shape, generator=g)
    texts = query_feats.repeat_interleave(IMAGES_PER_QUERY, dim=0)
    return images, texts


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    images, texts = product_search_pairs(seed)
    dataset = TensorDataset(images, texts)
    if fixed:
        loader = DataLoader(dataset, batch_size=B, shuffle=True, drop_last=True)
    else:
        loader = DataLoader(dataset, batch_size=B, sampler=SequentialSampler(dataset), drop_last=True)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        for tok, txt in loader:
            if step >= steps:
                break
            img_emb, txt_emb = model(tok, txt)
            logits = model.logit_scale.exp() * img_emb @ txt_emb.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img_emb, "text": txt_emb},
                            logits=logits, batch_size=B, inputs=tok)
            optimizer.step()
            step += 1
    session.close()
