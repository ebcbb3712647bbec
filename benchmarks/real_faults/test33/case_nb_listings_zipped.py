"""Images and captions come from two separate directory listings zipped together: the listings are in
filesystem order, not name order, so image i is paired with an unrelated caption.

What the user did: fine-tuning a transformers CLIPModel (tiny config, random weights) on a folder dataset laid
out as `images/<id>.jpg` and `captions/<id>.txt`. The dataset lists each folder (`glob`/`os.listdir`) and
zips the two lists into (image, caption) pairs, then trains with the model's own CLIP loss
(`return_loss=True`) on random batches of those pairs.

What went wrong and why: neither `glob` nor `os.listdir` sorts; both return the directory's own order. On a
hashed-directory filesystem (ext4 with dir_index, the default) that order follows a hash of the file name, and
`000123.jpg` and `000123.txt` hash to unrelated places, so the two listings are two unrelated permutations of
the ids. The zip pairs nearly every image with another item's caption; images and captions share no signal,
the diagonal of the logits is no better than any other entry, and the loss stays at ln(B). (Here the listing
order is emulated deterministically: names ordered by a hash of the file name, the way a hashed directory
returns them, instead of depending on the machine's filesystem.)

Threads: mcfunley/better-keynote-export#4 (the exported slide images, listed with `glob`, are zipped with the
presenter notes; `glob` returns the paths in arbitrary order, "and that won't do for zipping together slides +
presenter notes"; fixed by sorting the listing), rmjarvis/Piff#26 (`glob.glob()` can return bizarre ordering:
two globs, over the image files and over the catalog files, are not guaranteed to match up 1-1; sort them, and
pair the files explicitly).

The fix (fixed=True): sort both listings (and pair by stem), so the i-th image and the i-th caption are the
same item.

Validation (validate.py --half test33, seeds 0/1/2, 100 steps, B = 32, chance ln 32 = 3.466): fault final
loss 3.428 / 3.431 / 3.407 (ratio 0.989 / 0.990 / 0.983); fixed 1.160 / 0.857 / 0.931 (ratio 0.335 / 0.247 /
0.269).

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import hashlib

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("mcfunley/better-keynote-export#4", "rmjarvis/Piff#26")
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B = 32
N = 1024
LR = 1e-3


class Folder:
    """A directory of files (name -> decoded content). `listdir` returns the names the way a hashed
    directory does (ext4 dir_index): in the order of a hash of the name, not sorted."""

    def __init__(self, files: dict):
        self.files = files

    def listdir(self):
        return sorted(self.files, key=lambda name: hashlib.md5(name.encode()).hexdigest())

    def read(self, name):
        return self.files[name]


def write_dataset(seed):
    pixels, token_ids = image_caption_pairs(N, seed)
    images = Folder({f"{i:06d}.jpg": pixels[i] for i in range(N)})
    captions = Folder({f"{i:06d}.txt": token_ids[i] for i in range(N)})
    return images, captions


class ImageCaptionFolder(torch.utils.data.Dataset):
    def __init__(self, images: Folder, captions: Folder, fixed: bool):
        image_files = [f for f in images.listdir() if f.endswith(".jpg")]
        caption_files = [f for f in captions.listdir() if f.endswith(".txt")]
        if fixed:
            image_files, caption_files = sorted(image_files), sorted(caption_files)
            assert [f[:-4] for f in image_files] == [f[:-4] for f in caption_files]
        self.pairs = list(zip(image_files, caption_files))
        self.images, self.captions = images, captions

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        image_file, caption_file = self.pairs[i]
        return self.images.read(image_file), self.captions.read(caption_file)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    images, captions = write_dataset(seed)
    dataset = ImageCaptionFolder(images, captions, fixed)
    model = tiny_clip(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loader = torch.utils.data.DataLoader(dataset, batch_size=B, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed + 1))
    batches = iter(loader)
    with watch(model, optimizer, batch_size=B) as session:
        for step in range(steps):
            try:
                pixel_values, input_ids = next(batches)
            except StopIteration:
                batches = iter(loader)
                pixel_values, input_ids = next(batches)
            out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
            optimizer.zero_grad()
            out.loss.backward()
            session.observe(step, losses={"clip": out.loss},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=out.logits_per_image, inputs=pixel_values)
            optimizer.step()
