"""Every caption of a clip is put in the same batch, each against the repeated clip embedding, with the
diagonal as the only positive: the other captions of the same clip are scored as negatives.

What the user did: video-text alignment on MSR-VTT-style data (20 captions per clip) with a flamingo-pytorch
PerceiverResampler over frozen per-frame features (the Flamingo resampler is built for video frames) and a
text projection. To "use all the captions", the loader yields 2 clips per step (what fits in memory) and the
collate expands each clip to its 20 captions, repeating the clip 20 times: a batch of 40 rows. The loss is the
symmetric CLIP InfoNCE with `labels = torch.arange(40)`, the same code as for one caption per image.

What went wrong and why: in each row of the image->text logits the 20 captions of the same clip all belong
to the same (repeated, hence identical) clip embedding, and in each row of the text->image logits the 20
copies of its clip are identical columns. Only the diagonal is labelled positive, so 19 true matches per row
are negatives that the model can never rank below the target: whatever it learns, each row's softmax must
spread over the 20 identical entries and the loss is bounded below by ln 20 = 3.00 against a chance level of
ln 40 = 3.69. The loss sits near ln 20 and retrieval cannot improve beyond telling the two clips apart.

Threads: lerogo/aaai24_itr_cusa#5 (a user asks whether leaving the `idx` argument of the contrastive loss at
None matters; the maintainer: with idx None there are problems on COCO and Flickr30k, where one image has five
sentences: the ids are what tells the loss which captions share an image), salesforce/BLIP#41 (in BLIP's
retrieval fine-tuning, image-text pairs that share an image id are positives; the issue asks why the ITA loss
does not use the ids).

The fix (fixed=True): pass the clip ids (BLIP's `idx`) and keep the other captions of the same clip out of
each row's negatives (masked out of the softmax, the diagonal stays the target). With BLIP's soft
multi-positive targets instead, the loss would bottom out at ln 20 by construction even when the model is
right, so the masked form is used to make the fix visible in the loss.

Validation (validate.py --half test33, seeds 0/1/2, 100 steps, B = 40 rows = 2 clips x 20 captions,
chance ln 40 = 3.689): fault final loss 3.046 / 3.244 / 3.029 (ratio 0.826 / 0.879 / 0.821, at or above the
ln 20 = 3.00 floor); fixed 0.039 / 0.703 / 0.027 (ratio 0.011 / 0.191 / 0.007).

Ground truth: false_negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import ResamplerAligner, token_pairs

THREADS = ("lerogo/aaai24_itr_cusa#5", "salesforce/BLIP#41")
CAUSE = "false_negatives"
FAMILY = "batch and candidates"

CLIPS = 2            # clips per step
CAPTIONS = 20        # captions per clip (MSR-VTT)
B = CLIPS * CAPTIONS
LR = 1e-3


def make_captions(texts, seed):
    """20 different captions per clip: the clip's text features plus per-caption wording noise."""
    g = torch.Generator().manual_seed(seed + 7)
    return texts.unsqueeze(1) + 0.3 * texts.std() * torch.randn(len(texts), CAPTIONS, texts.shape[1], generator=g)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    captions = make_captions(texts, seed)
    model = ResamplerAligner()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed + 1)
    with watch(model, optimizer, batch_size=B) as session:
        for step in range(steps):
            clip_ids = torch.randint(0, len(tokens), (CLIPS,), generator=g)
            ids = clip_ids.repeat_interleave(CAPTIONS)                     # (40,) clip id of each row
            frames = tokens[ids]                                           # each clip repeated 20 times
            caps = captions[clip_ids].reshape(B, -1)                       # its 20 captions
            img, txt = model(frames, caps)
            logits = model.logit_scale.exp() * img @ txt.t()
            labels = torch.arange(B)
            if fixed:  # captions of the same clip are not negatives
                same = ids[:, None] == ids[None, :]
                logits = logits.masked_fill(same & ~torch.eye(B, dtype=torch.bool), -1e4)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            inputs=frames)
            optimizer.step()
