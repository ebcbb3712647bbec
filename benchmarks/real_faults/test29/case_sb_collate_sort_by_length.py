"""A collate_fn that sorts the captions by length for `pack_padded_sequence` and leaves the images in
dataset order: inside every batch the image-caption pairing is scrambled, the loss sits at ln(B).

What the user did: a VSE++-style image-text aligner: images through a small transformers CLIP vision tower
(tiny config, random weights) + its projection; captions of variable length (3 to 7 words) through a word
embedding and a GRU fed with `pack_padded_sequence`, last hidden state -> projection; a learnable logit
scale; symmetric InfoNCE over the batch of 32. `pack_padded_sequence` (enforce_sorted=True by default)
wants the sequences sorted by decreasing length, so the collate_fn sorts the captions and their lengths, and
returns the stacked images as they came.

What went wrong and why: the sort permutes the caption rows but not the image rows, so row i of the logits
pairs image i with the caption of some other item of the batch (the permutation is whatever the caption
lengths of that batch dictate, a different one every batch). The diagonal targets point at unrelated
captions: there is no signal shared by an image and "its" caption, and the loss never leaves ln(32).

Thread: hsgodhia/hred#2 (the data loader sorts each field of a batch by its own length for
pack_padded_sequence; the reporter shows it "breaks the alignment" of the tuples, the maintainer agrees the
sort breaks the association and moves the sort so that the tuples are permuted together).

Fix (fixed=True): apply the same length permutation to the images (sort the whole pairs, not one field).

Validation (validate.py --half test29, seeds 0/1/2, 100 steps, batch 32, ln(32) = 3.4657):
    fault: final loss 3.4697 / 3.4713 / 3.4708 -> ratio 1.001 / 1.002 / 1.002
    fixed: final loss 1.3430 / 1.3362 / 1.3689 -> ratio 0.388 / 0.386 / 0.395

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

from common import E, SEQ, VOCAB, clip_loss, image_caption_pairs, tiny_clip

THREADS = ("hsgodhia/hred#2",)
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B = 32
HIDDEN = 128


class CaptionDataset(torch.utils.data.Dataset):
    """Images and captions of 3 to 7 words (token ids, no padding)."""

    def __init__(self, n: int, seed: int):
        self.pixels, ids = image_caption_pairs(n, seed)
        lengths = torch.randint(3, SEQ, (n,), generator=torch.Generator().manual_seed(seed + 1))
        self.captions = [ids[i, :lengths[i]] for i in range(n)]

    def __len__(self):
        return len(self.captions)

    def __getitem__(self, i):
        return self.pixels[i], self.captions[i]


def make_collate(fixed: bool):
    def collate(batch):
        images, captions = zip(*batch)
        images = torch.stack(images)
        lengths = torch.tensor([len(c) for c in captions])
        order = torch.argsort(lengths, descending=True)  # pack_padded_sequence wants decreasing lengths
        captions = [captions[i] for i in order]
        lengths = lengths[order]
        if fixed:
            images = images[order]
        return images, pad_sequence(captions, batch_first=True), lengths

    return collate


class VSE(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        clip = tiny_clip(seed)
        self.vision = clip.vision_model
        self.visual_projection = clip.visual_projection
        self.embed = nn.Embedding(VOCAB, HIDDEN, padding_idx=0)
        self.gru = nn.GRU(HIDDEN, HIDDEN, batch_first=True)
        self.text_projection = nn.Linear(HIDDEN, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, pixels):
        return F.normalize(self.visual_projection(self.vision(pixel_values=pixels).pooler_output), dim=-1)

    def encode_text(self, captions, lengths):
        _, hidden = self.gru(pack_padded_sequence(self.embed(captions), lengths, batch_first=True))
        return F.normalize(self.text_projection(hidden[-1]), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    dataset = CaptionDataset(2048, seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=B, shuffle=True, drop_last=True,
                                         collate_fn=make_collate(fixed),
                                         generator=torch.Generator().manual_seed(seed))
    model = VSE(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        for pixels, captions, lengths in loader:
            image_embeds = model.encode_image(pixels)
            text_embeds = model.encode_text(captions, lengths)
            logits = model.logit_scale.exp() * image_embeds @ text_embeds.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss},
                            embeddings={"image": image_embeds, "text": text_embeds}, logits=logits,
                            batch_size=B)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step >= steps:
                break
    session.close()
