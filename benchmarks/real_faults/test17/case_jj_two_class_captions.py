"""CLIP loss on a dataset whose captions are one of two label prompts: every batch holds dozens of copies
of each caption, and InfoNCE treats all copies but one as negatives.

What the user did: fine-tuned a CLIP-style aligner (perceiver-pytorch Perceiver over frozen patch tokens,
an MLP on frozen text-encoder features, open_clip's learnable logit scale) on their own two-class image
dataset, writing each image's caption from its label ("a photo of a normal part" / "a photo of a defective
part"), with the stock symmetric CLIP loss and `labels = arange(B)`. With B = 64 and two captions, each row
of the logits has ~32 identical candidate captions of which exactly one is called positive: the loss
cannot go below (1/B) sum_c n_c ln n_c >= ln(B/2) = 0.833 ln(B), however well the images are separated by
class. The loss falls a little below ln(64) and then stops; the images of one class are pushed apart from
their own caption's copies.

From the threads:
- mlfoundations/open_clip#821 "Loss isn't converging": titles like 'urban, sunny, backlight' as captions,
  "some of the images within a batch are from the same sequence, images will be alike and are likely to
  have same label. But model will still try to contrast it, make it hard to learn any useful information";
  a second user: "I'm encountering a similar issue where the loss stops decreasing ... My dataset consists
  of two classes".
- moein-shariatnia/OpenAI-CLIP#11: "it's possible that two same pairs of images and texts appear in one
  batch and contrastive loss tries to pull their embeddings apart, which is not what we want" (the
  author's reply); fixed later by id-driven targets "so multi-caption images share positives".
- fartashf/vsepp#6 "Batch formation potentially causing false negatives": "(5, 19) and (19, 5) entries will
  be incorrectly treated as scores for unaligned embeddings".

Thread: mlfoundations/open_clip#821
Thread: moein-shariatnia/OpenAI-CLIP#11
Thread: fartashf/vsepp#6
Fix: stop treating copies of the positive caption as negatives: score each image against the batch's
distinct captions only (torch.unique over the caption ids) with the caption id as target, so each
candidate appears once.

Validation (benchmarks/real_faults/validate.py --half test17, seeds 0 1 2, B = 64, 120 steps): fault final
loss / ln(64) = 0.8537 / 0.8464 / 0.8478 (loss 3.550 / 3.520 / 3.526, first step 4.960 / 4.881 / 4.809; floor
ln(32) = 3.466); fixed (2 distinct candidates, ratio against ln 2) = 0.0612 / 0.0602 / 0.0306.

Ground truth: false_negatives.
"""

from __future__ import annotations

import pathlib
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import DT, D, PerceiverAligner, clip_loss, token_pairs  # noqa: E402

THREADS = ("mlfoundations/open_clip#821", "moein-shariatnia/OpenAI-CLIP#11", "fartashf/vsepp#6")
CAUSE = "false_negatives"
FAMILY = "batch"


def two_class_dataset(n: int, seed: int):
    """Patch tokens of n images, a binary label per image (a direction in the image content), and the
    frozen text-encoder features of the two label prompts."""
    tokens, _ = token_pairs(n, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    direction = torch.randn(D, generator=g)
    score = tokens.mean(1) @ direction
    labels = (score > score.median()).long()
    prompts = torch.randn(2, DT, generator=g)  # "a photo of a normal part", "a photo of a defective part"
    return tokens, labels, prompts


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, labels, prompts = two_class_dataset(2048, seed)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    B = 64
    g = torch.Generator().manual_seed(seed)
    with watch(model, optimizer, batch_size=B) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=g)
            caption_ids = labels[idx]
            texts = prompts[caption_ids]  # each image's caption: its label prompt
            img, txt = model(tokens[idx], texts)
            scale = model.logit_scale.exp()
            if fixed:
                uniq, target = torch.unique(caption_ids, return_inverse=True)
                cand = F.normalize(model.text(prompts[uniq]), dim=-1)
                logits = scale * img @ cand.t()
                loss = F.cross_entropy(logits, target)
                extra = {"targets": target, "candidates": len(uniq)}
            else:
                logits = scale * img @ txt.t()
                loss = clip_loss(logits)
                extra = {}
            optimizer.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=B, inputs=tokens[idx], extras={"logit_scale": scale}, **extra)
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
