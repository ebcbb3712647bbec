"""Image feature files listed in string order, captions read in id order: every image is paired with another caption.

What the user did: precomputed frozen-backbone patch tokens for each image into one file per image, named by the
image id without zero padding ("0.pt", "1.pt", ..., "1023.pt"), and kept the captions' text features in a table in
id order. The dataset built its image list with `sorted(os.listdir(folder))` and zipped it with the caption rows,
then trained a Perceiver aligner (perceiver-pytorch latent cross-attention, mean over latents, projection; text
MLP) with the CLIP loss.

What went wrong and why: `sorted` on file names is lexicographic, so the image list runs 0, 1, 10, 100, 1000,
1001, ..., 101, ... while the captions run 0, 1, 2, 3, ...: after the first two items the i-th image is paired with
the caption of another image. The pairing is a fixed permutation, so the "positive" of every row carries no shared
signal with it and the contrastive loss cannot fall below ln(B): the model can only learn that nothing predicts the
caption. (Whether the list comes out in string order or in the file system's arbitrary order, the pairing is broken
the same way.)

Threads: vana77/Market-1501_Attribute#7 (matching images to labels depends on sorting "0665" as a string or as an
integer: "99" < "100" as integers but "99" > "100" as strings) and ardamavi/Sign-Language-Digits-Dataset#2 (items
read from the folder in another order than the labels, "causing a conflict between images and labels"; fixed by
sorting both the same way).

Fix (fixed=True): order the image files by their integer id (the same key the caption table uses).

Validation (validate.py --half test21, 100 steps, batch 32, ln(32) = 3.466), final loss / ln(32):
  seed 0: fault 3.4259 (0.989), fixed 0.0943 (0.027)
  seed 1: fault 3.3984 (0.981), fixed 0.1105 (0.032)
  seed 2: fault 3.4128 (0.985), fixed 0.1089 (0.031)

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("vana77/Market-1501_Attribute#7", "ardamavi/Sign-Language-Digits-Dataset#2")
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B = 32


class FeatureCaptionDataset(torch.utils.data.Dataset):
    """One patch-token file per image in `folder` (name -> tensor, as a directory listing would give them) and a
    caption-feature table whose row i is image id i."""

    def __init__(self, folder: dict[str, torch.Tensor], caption_rows: torch.Tensor, numeric_sort: bool):
        names = list(folder)
        if numeric_sort:
            names = sorted(names, key=lambda f: int(f.split(".")[0]))
        else:
            names = sorted(names)  # "0.pt", "1.pt", "10.pt", "100.pt", "1000.pt", ...
        self.files = [folder[n] for n in names]
        self.captions = caption_rows

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.files[i], self.captions[i]


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    folder = {f"{i}.pt": tokens[i] for i in torch.randperm(len(tokens)).tolist()}  # written in any order
    data = FeatureCaptionDataset(folder, texts, numeric_sort=fixed)
    loader = torch.utils.data.DataLoader(data, batch_size=B, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        for tok, txt in loader:
            img_e, txt_e = model(tok, txt)
            logits = model.logit_scale.exp() * img_e @ txt_e.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img_e, "text": txt_e},
                            logits=logits, batch_size=B, inputs=tok)
            optimizer.step()
            step += 1
            if step >= steps:
                break
    session.close()
