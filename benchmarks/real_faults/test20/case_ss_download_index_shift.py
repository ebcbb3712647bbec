"""Captions joined to downloaded images by position: every image that failed to download shifts all later
captions onto the wrong image, so the pairs the model sees share no signal and the loss stays at ln(B).

What the user did: fine-tuned a CLIP model (transformers `CLIPModel`, tiny config, random weights) on a
web image-caption set. The annotation is a table of (url, caption) rows; the images were fetched with a
download script that writes the images it managed to fetch under consecutive file numbers
(000000000.jpg, 000000001.jpg, ...), skipping the urls that time out or 404. The training set was then
built as `zip(sorted(image_files), captions)`: image file i with caption row i.

What went wrong and why: about one url in ten fails, and each failure moves every later image one row up
against the caption table. After the first few hundred rows the caption paired with image i belongs to
image i + k for a k that keeps growing, i.e. to an unrelated image. The contrastive loss has nothing to
align (no shared signal between an image and "its" caption), so it stays at chance however long one
trains; in the threads the same thing shows up as captions that visibly do not describe their images
("1.jpg corresponds to caption 'a portrait of person a member of the team', while in GCC-training.tsv the
first row corresponds to 'a very typical bus station'"; "when point to '0000000/0000008.jpg', the caption of
mine is ... while the 'raw_caption' of yours is ...").

Threads: CVMI-Lab/CoDet#12 (CC3M images downloaded by the repo's script do not match the captions of the
released annotation file), ant-research/DreamLIP#3 (images fetched with img2dataset are numbered differently
from the released captions; the maintainers answer with a path -> url mapping so that images and captions
are joined by url, not by index).

Fix (fixed=True): join each downloaded image to its caption through the url the downloader recorded for it
(img2dataset's per-sample metadata), not by position.

Validation (validate.py, 100 steps, batch 32, final = mean of the last 5 losses, chance ln(32) = 3.4657):
    seed 0: fault 3.4370 (0.992 ln B), fixed 1.1023 (0.318 ln B)
    seed 1: fault 3.4338 (0.991 ln B), fixed 1.1703 (0.338 ln B)
    seed 2: fault 3.4409 (0.993 ln B), fixed 0.7193 (0.208 ln B)

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("CVMI-Lab/CoDet#12", "ant-research/DreamLIP#3")
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B = 32
N_ROWS = 2048
FAIL_RATE = 0.1


def download(urls, pixels_by_url, seed):
    """The download script: fetches each url in table order, writes the ones that succeed as consecutive files
    and records, per file, the url it came from (img2dataset's metadata)."""
    g = torch.Generator().manual_seed(seed + 7)
    files, meta = [], []
    for url in urls:
        if torch.rand(1, generator=g).item() < FAIL_RATE:  # timeout / 404: nothing written
            continue
        files.append(pixels_by_url[url])          # f"{len(files):09d}.jpg"
        meta.append(url)                          # f"{len(files):09d}.json" -> {"url": url}
    return files, meta


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    pixels, input_ids = image_caption_pairs(N_ROWS, seed=seed)
    urls = [f"https://img.example/{seed}/{i}.jpg" for i in range(N_ROWS)]
    captions = {url: input_ids[i] for i, url in enumerate(urls)}          # the annotation table
    image_files, image_meta = download(urls, {url: pixels[i] for i, url in enumerate(urls)}, seed)

    if fixed:   # join on the url the downloader recorded for each file
        train_pixels = torch.stack(image_files)
        train_ids = torch.stack([captions[url] for url in image_meta])
    else:       # join by position: image file i <-> caption row i
        n = len(image_files)
        train_pixels = torch.stack(image_files)
        train_ids = torch.stack([captions[url] for url in urls[:n]])

    model = tiny_clip(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed + 1)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(train_pixels), (B,), generator=g)
        out = model(input_ids=train_ids[idx], pixel_values=train_pixels[idx], return_loss=True)
        out.loss.backward()
        session.observe(step, losses={"clip": out.loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B, inputs=train_pixels[idx].flatten(1),
                        extras={"logit_scale": model.logit_scale.exp()})
        optimizer.step()
        optimizer.zero_grad()
    session.close()
