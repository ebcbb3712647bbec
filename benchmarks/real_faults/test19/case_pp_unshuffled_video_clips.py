"""Clip-level video-text alignment trained from a clip list stored video by video, with the DataLoader left at
shuffle=False: every batch is a run of consecutive clips from one or two videos that all carry the same caption.

What the user did: a perceiver-pytorch Perceiver aligner (frozen per-clip patch tokens -> Perceiver latents -> mean
-> projection; caption features -> small MLP) trained with the CLIP loss on 128 videos cut into 32 clips each. The
clip table was written video by video (clip 0..31 of video 0, then video 1, ...), each clip paired with its video's
caption, and the training loader was built without shuffling (as the thread's train.py does; shuffle=False is
DataLoader's default). Batch size 64. The loss starts above chance, wobbles between 0.85 and 1.1 ln(64) and settles at
~0.85 ln(64).

Why: with the clips in storage order, a batch of 64 holds exactly two videos, 32 clips each. The 32 clips of a video
have one caption between them and near-identical tokens, yet the diagonal targets score every other clip/caption of
the same video as a negative. Each row has 32 copies of its right answer of which only one is "correct", so the
loss cannot go below ln(32) = 0.83 ln(64) however well the model separates the two videos, and the gradient of the
31 false negatives pulls against the positive. Shuffled, a batch of 64 draws from 128 videos and holds on
average half a same-video partner per clip (63/127): the false negatives all but vanish and the model aligns clips
with captions.

Thread: wileewang/TransPixeler#22 ("No shuffle for training dataset ... This will cause problem when training data
are a serial of clips where clips next to each other are from the same video"), which the maintainer closed
pointing to the change that shuffles the training loader (#24). In a contrastive loss the consequence is that the
same-video clips of a batch are duplicates scored as negatives.

Fix (fixed=True): `shuffle=True` on the training DataLoader.

Validation (validate.py, seeds 0/1/2, 100 steps, B = 64, final CLIP loss / ln(64)):
fault 0.857 / 0.855 / 0.851, fixed 0.096 / 0.091 / 0.093.

Ground truth: false_negatives.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import D, T, PerceiverAligner, clip_loss, token_pairs

THREADS = ("wileewang/TransPixeler#22",)
CAUSE = "false_negatives"
FAMILY = "batch and candidates"

N_VIDEOS, CLIPS_PER_VIDEO, BATCH = 128, 32, 64


def clip_table(seed: int) -> TensorDataset:
    """Per-clip frozen-backbone tokens and the caption features of their video, stored video by video."""
    video_tokens, video_captions = token_pairs(N_VIDEOS, seed=seed)
    g = torch.Generator().manual_seed(seed + 1000)
    clips = video_tokens.repeat_interleave(CLIPS_PER_VIDEO, 0)
    clips = clips + 0.3 * torch.randn(N_VIDEOS * CLIPS_PER_VIDEO, T, D, generator=g)  # clip-to-clip variation
    captions = video_captions.repeat_interleave(CLIPS_PER_VIDEO, 0)  # one caption per video
    return TensorDataset(clips, captions)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    dataset = clip_table(seed)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=fixed, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    with watch(model, optimizer, batch_size=BATCH) as session:
        step = 0
        while step < steps:
            for clips, captions in loader:
                img, txt = model(clips, captions)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                loss.backward()
                session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                                logits=logits, batch_size=len(img), inputs=clips)
                optimizer.step()
                optimizer.zero_grad()
                step += 1
                if step >= steps:
                    break
