"""The released per-image caption files are named with the wrong image ids: every image is paired with
another image's caption.

What the user did: fine-tuned an image-text aligner (patch tokens of a frozen backbone -> perceiver-pytorch
Perceiver -> mean over latents -> projection; text features -> MLP; symmetric CLIP loss) on a dense-caption
release that ships one caption file per image, `<image_id:012d>.txt`, next to the images of an existing
image set. Their Dataset looks an image up by its id and opens the caption file with the same id, which
is exactly how the release is meant to be read.

What went wrong: bytedance/coconut_cvpr2024#42: the caption file 000000000009.txt of the release does
not match the corresponding image of COCO train2017; the caption files had been named with ids that do
not belong to the images they describe, and the maintainers fixed the names and asked to use the updated
files. google/crossmodal-3600#2 is the same failure ("The image_id values ... do not match", fixed by the
maintainers publishing the corrected mapping). Trained on such a release, the caption a batch pairs with
image i describes some other image, so the contrastive loss has nothing to learn.

Why (the mechanism): the Dataset's own code is right; the lookup table it reads is a permutation. How the
names went wrong is modelled here as: the release named caption file k after the k-th id of the sorted id
list, while the captions were stored in the order of the authors' annotation dump. Image i is paired with
the text features of image perm(i): no shared signal between the two sides of a pair, the diagonal of the
logit matrix is no more predictable than any other entry, and the loss stays at ln B (the model could
only memorise the fixed wrong pairs, which it barely starts to in 100 steps over 1024 pairs).

Fix (the maintainers' re-upload): use the corrected caption files, whose names are the ids of the images
they describe (here: the mapping built from the image each caption was written for).

Validation (validate.py --half test30, 100 steps, B = 32, ln B = 3.466; final = mean of the last 5 steps):
    seed 0: fault 3.4202 (ratio 0.987), fixed 0.1070 (ratio 0.031)
    seed 1: fault 3.4064 (ratio 0.983), fixed 0.1345 (ratio 0.039)
    seed 2: fault 3.4233 (ratio 0.988), fixed 0.0965 (ratio 0.028)

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import torch
from common import PerceiverAligner, clip_loss, token_pairs
from torch.utils.data import DataLoader, Dataset

THREADS = ("bytedance/coconut_cvpr2024#42", "google/crossmodal-3600#2")
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"


def make_release(n: int, seed: int, corrected: bool):
    """What the user downloads: image features keyed by image id, and one caption file per image id."""
    tokens, texts = token_pairs(n, seed=seed)  # row i of each describes image i
    g = torch.Generator().manual_seed(seed + 1)
    image_ids = torch.randperm(600_000, generator=g)[:n].sort().values.tolist()  # COCO-like sparse ids
    images = {image_id: tokens[i] for i, image_id in enumerate(image_ids)}
    if corrected:  # the re-uploaded files: named after the image each caption was written for
        captions = {f"{image_id:012d}.txt": texts[i] for i, image_id in enumerate(image_ids)}
    else:  # the first upload: captions in annotation-dump order, named by the sorted id list
        dump_order = torch.randperm(n, generator=g).tolist()
        captions = {f"{image_id:012d}.txt": texts[dump_order[k]] for k, image_id in enumerate(image_ids)}
    return images, captions


class CaptionedImages(Dataset):
    def __init__(self, images: dict, captions: dict):
        self.images, self.captions = images, captions
        self.ids = sorted(images)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, k):
        image_id = self.ids[k]
        return self.images[image_id], self.captions[f"{image_id:012d}.txt"]


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    images, captions = make_release(1024, seed, corrected=fixed)
    loader = DataLoader(CaptionedImages(images, captions), batch_size=B, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    session = watch(model, optimizer, batch_size=B)
    step = 0
    try:
        while step < steps:
            for tokens, texts in loader:
                img, txt = model(tokens, texts)
                logits = model.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                optimizer.zero_grad()
                loss.backward()
                session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                                logits=logits, batch_size=B, inputs=tokens)
                optimizer.step()
                step += 1
                if step >= steps:
                    break
    finally:
        session.close()
