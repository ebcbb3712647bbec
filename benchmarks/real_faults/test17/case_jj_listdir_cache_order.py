"""Cached image tensors read back in directory-listing order while the captions come from the CSV in id
order: every image is paired with another image's caption.

What the user did: to save the decode/resize cost on every epoch they preprocessed each image once and
cached the pixel tensor as `<id>.pt` in a cache directory; their Dataset then listed that directory
(`os.listdir`, i.e. the file system's own order: on ext4 the order of a hash of the name) and paired the
i-th cached file with the i-th row of `captions.csv` (sorted by id). The pairs are a fixed random
permutation of the true ones, the same every epoch, so the tiny transformers CLIPModel (trained from
scratch with the stock CLIP loss) has nothing to align: the loss stays at ln(B). The directory order is
simulated here (names ordered by crc32) so that the run does not depend on the machine's file system.

From the threads (the same bug class for image/mask and image/image pairs):
- HasnainRaz/SemSegPipeline#9: "in python3.6 the os.listdir() function for getting file names may result
  in different order of image names and may lead to improper pairing of the image with mask. I got improper
  image-mask pair from dataset ... it would be better to sort this list to ensure they are properly paired";
  the maintainer: "It is upto you to prepare the lists so that each image-mask index corresponds to the same
  pair."
- tamarott/SinGAN#136 "Fix wrong pairing between files in SIFID": "The root cause is that `glob(...)` doesn't
  always keep order, so `files1` and `files2` were ordered differently. A fix for that bug was sorting".
- keras-team/keras#3871: "`os.listdir` to `sorted(os.listdir)` for alphabetical order instead of arbitrary
  order. ... this allows masks and images with the same name to be read together."

Thread: HasnainRaz/SemSegPipeline#9
Thread: tamarott/SinGAN#136
Thread: keras-team/keras#3871
Fix: `sorted(os.listdir(cache_dir))` (or key the captions by the file's id) so file i is caption i's image.

Validation (benchmarks/real_faults/validate.py --half test17, seeds 0 1 2, B = 32, ln(32) = 3.4657, 150
steps): fault final loss / ln(B) = 0.9862 / 0.9861 / 0.9961 (loss 3.418 / 3.418 / 3.452); fixed 0.1666 /
0.1377 / 0.1531 (loss 0.577 / 0.477 / 0.531).

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import pathlib
import sys
import zlib

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import clip_loss, image_caption_pairs, tiny_clip  # noqa: E402

THREADS = ("HasnainRaz/SemSegPipeline#9", "tamarott/SinGAN#136", "keras-team/keras#3871")
CAUSE = "misaligned_pairs"
FAMILY = "data"


def listdir(cache: dict) -> list[str]:
    """Directory listing in file-system order (ext4 htree: by a hash of the name, not by name)."""
    return sorted(cache, key=lambda name: zlib.crc32(name.encode()))


class CachedPairs(torch.utils.data.Dataset):
    """The user's Dataset: cached pixel tensors from the cache dir, captions from captions.csv (id order)."""

    def __init__(self, cache: dict, captions: list, fixed: bool):
        self.cache = cache
        self.files = sorted(listdir(cache)) if fixed else listdir(cache)
        self.captions = captions

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.cache[self.files[i]], self.captions[i]


def train(watch, steps: int = 150, seed: int = 0, fixed: bool = False) -> None:
    pixels, ids = image_caption_pairs(1024, seed=seed)
    cache = {f"{i:05d}.pt": pixels[i] for i in range(len(pixels))}  # one cached tensor per image id
    captions = [ids[i] for i in range(len(ids))]  # captions.csv rows, sorted by image id
    data = CachedPairs(cache, captions, fixed)
    B = 32
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(data, batch_size=B, shuffle=True, drop_last=True, generator=g)
    model = tiny_clip(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    step = 0
    with watch(model, optimizer, batch_size=B) as w:
        while step < steps:
            for pix, input_ids in loader:
                out = model(input_ids=input_ids, pixel_values=pix)
                logits = out.logits_per_image
                loss = clip_loss(logits)
                optimizer.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                          logits=logits, batch_size=B, inputs=pix, extras={"logit_scale": model.logit_scale.exp()})
                optimizer.step()
                step += 1
                if step >= steps:
                    break


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
