"""Every caption of a video becomes its own row, the rows of one video stay together, and a batch of 32
holds 2-3 videos: most of each row's "negatives" are its own video's other captions.

What the user did: trained a Perceiver-resampler video/image encoder (flamingo-pytorch, frozen-backbone
patch tokens in) against a text projection with a CLIP loss on an MSR-VTT-like set, 20 captions per
clip. To use every caption they expanded "1 anchor with n positives" into n (clip, caption) rows, and
to decode each clip once their IterableDataset yields a clip's 20 rows one after the other; the
DataLoader batches 32 consecutive rows.

What went wrong and why: the CLIP loss scores each row against the other 31 rows of the batch as
negatives, but 3 to 19 of them (11 or more for most rows) come from the same clip: the same image
embedding, paired with another caption of it. For an image row, the other captions of its own clip
are as good a match as its own caption, and for a caption the copies of its clip are identical
columns: the loss cannot fall below about
sum_c (n_c / B) ln(n_c) for n_c rows of clip c in the batch (~2.70 here, 0.78 ln 32), and what the
gradient asks beyond that is to push paraphrases of one clip apart. The loss stays at ~0.8 ln(32).
sentence-transformers' maintainers answer exactly this for their in-batch-negative loss
(huggingface/sentence-transformers#608: several positives per anchor; if there is a high chance that
two of them land in the same mini-batch, write a DataLoader that ensures an anchor is not twice in the
same batch), and the user of #1557, with several positives per anchor, fixed it with
`NoDuplicatesDataLoader`.

Fix (the threads'): a no-duplicates batch sampler: shuffle the rows and fill each batch only with rows
whose clip is not in it yet (a clip's other captions wait for a later batch).

Validation (validate.py, 100 steps, final loss / ln(32), seeds 0/1/2):
fault 0.7960 / 0.8128 / 0.7983 (final loss 2.759 / 2.817 / 2.767, at the duplicate floor ~2.70);
fixed 0.0188 / 0.0208 / 0.0185.

Ground truth: false_negatives.
"""

from __future__ import annotations

import torch

from common import DT, ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/sentence-transformers#608", "huggingface/sentence-transformers#1557")
CAUSE = "false_negatives"
FAMILY = "batch and candidates"

B = 32
CLIPS, CAPTIONS = 64, 20


class GroupedRows(torch.utils.data.IterableDataset):
    """One clip decoded at a time, then one row per caption: (patch tokens, caption features, clip id)."""

    def __init__(self, tokens, captions, seed):
        self.tokens, self.captions, self.g = tokens, captions, torch.Generator().manual_seed(seed)

    def __iter__(self):
        while True:
            for c in torch.randperm(len(self.tokens), generator=self.g).tolist():   # clips shuffled
                for j in range(self.captions.shape[1]):
                    yield self.tokens[c], self.captions[c, j], c


def no_duplicate_batches(n_clips, n_captions, seed):
    """NoDuplicates sampling: shuffled rows, a row joins the batch only if its clip is not there yet."""
    g = torch.Generator().manual_seed(seed)
    while True:
        pending = torch.randperm(n_clips * n_captions, generator=g).tolist()
        while len(pending) >= B:
            batch, clips, rest = [], set(), []
            for r in pending:
                if len(batch) < B and r // n_captions not in clips:
                    batch.append(r)
                    clips.add(r // n_captions)
                else:
                    rest.append(r)
            if len(batch) < B:
                break
            pending = rest
            yield batch


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(CLIPS, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    captions = texts.unsqueeze(1) + 0.5 * torch.randn(CLIPS, CAPTIONS, DT, generator=g)   # paraphrases
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    session = watch(model, optimizer, batch_size=B)
    if fixed:
        rows = no_duplicate_batches(CLIPS, CAPTIONS, seed)
        batches = ((tokens[[r // CAPTIONS for r in b]], captions.view(-1, DT)[b]) for b in rows)
    else:
        loader = torch.utils.data.DataLoader(GroupedRows(tokens, captions, seed), batch_size=B)
        batches = ((x, t) for x, t, _ in loader)
    for step, (x, t) in zip(range(steps), batches):
        img, txt = model(x, t)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=x, extras={"logit_scale": model.logit_scale.exp()})
        optimizer.step()
    session.close()
