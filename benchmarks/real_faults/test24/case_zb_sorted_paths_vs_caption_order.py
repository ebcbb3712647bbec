"""Data pipeline: the image loader sorts the file paths alphanumerically while the caption list follows the
annotation file's order, so almost every image is paired with another image's caption.

What the user did: a perceiver-pytorch aligner (latent cross-attention over frozen patch tokens, a text MLP)
trained on their own folder of image features, one file per image named by its integer id (`0.pt` ...
`4095.pt`), and a `captions.csv` listing one caption per id in id order. The image side is loaded the way
`image_dataset_from_directory` does it: list the folder and sort the paths alphanumerically. The caption list,
passed in as the "labels", is built by walking the annotation rows in their own order, assuming it is the same
order as the images'.

What went wrong and why: alphanumeric order of the paths is `0, 1, 10, 100, 1000, 1001, ..., 1009, 101, ...`,
not the numeric order of the ids, so position k of the image list and position k of the caption list name
different items for all but a handful of k. Every batch pairs images with unrelated captions; the pairing is a
fixed permutation with no shared signal to learn, so the contrastive loss stays at ln(64). The keras thread is
the same mistake: the label list followed os.walk's order while the loader sorted the image paths ("I get the
labels assigned to my images in what appears a random order"), and keras' own DirectoryIterator had to sort the
files because os.walk returns them "in arbitrary order" (keras#7869).

Fix (fixed=True): key the captions by the image file's id, i.e. build the caption list in the loader's own
(sorted) path order, so each row's caption belongs to its image.

Threads: keras-team/keras#14416 (image_dataset_from_directory: labels listed in os.walk order, images sorted
alphanumerically, labels land on the wrong images); keras-team/keras#7869 (sort the files: os.walk orders them
arbitrarily, images and masks read together mismatch).

Validation (validate.py, seeds 0/1/2, 100 steps, batch 64, final loss / ln(64)):
  fault: 4.1656 / 4.1622 / 4.1570 -> ratio 1.002 / 1.001 / 1.000
  fixed: 0.1449 / 0.1634 / 0.1458 -> ratio 0.035 / 0.039 / 0.035
(2 of the 4096 positions pair an image with its own caption under the fault.)

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("keras-team/keras#14416", "keras-team/keras#7869")
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

N = 4096  # images in the folder
B = 64


def load_folder(seed: int):
    """The user's data on disk: {file name: patch tokens} for the image folder and the rows of captions.csv
    (image id, text features) in id order."""
    tokens, texts = token_pairs(N, seed=seed)
    folder = {f"{i}.pt": tokens[i] for i in range(N)}
    csv_rows = [(i, texts[i]) for i in range(N)]
    return folder, csv_rows


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    folder, csv_rows = load_folder(seed)

    paths = sorted(folder)  # the loader's order: alphanumeric file paths, as image_dataset_from_directory
    images = torch.stack([folder[p] for p in paths])
    if fixed:  # the caption of each loaded image, looked up by the image's own id
        caption_of = dict(csv_rows)
        captions = torch.stack([caption_of[int(p.split(".")[0])] for p in paths])
    else:  # the "labels" list in the annotation file's order
        captions = torch.stack([text for _, text in csv_rows])

    loader = DataLoader(TensorDataset(images, captions), batch_size=B, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    session = watch(model, optimizer, batch_size=B)
    step = 0
    while step < steps:
        for tok, txt in loader:
            img, cap = model(tok, txt)
            logits = model.logit_scale.exp() * img @ cap.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": cap}, logits=logits,
                            batch_size=len(img), inputs=tok)
            optimizer.step()
            step += 1
            if step == steps:
                break
    session.close()
