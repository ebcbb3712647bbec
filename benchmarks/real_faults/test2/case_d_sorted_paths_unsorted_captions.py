"""The dataset lists the image files, builds the caption list from that listing, and only then sorts the
image paths "for reproducibility": captions stay in listing order, images in sorted order, so every image
is paired with another file's caption and the loss never leaves ln(B). Threads: cloneofsimo/lora#197
("self.instance_images_path is sorted but not self.captions"), Malikanhar/Face-Sketch-to-Image-
Generation-using-GAN#27 ("the sketch-photo pairs are mismatched ... the images had different sorting
schemes"). The fix: sort the paths before the captions are read from them.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64): fault final loss (mean of the last 5 steps)
4.03/4.00/4.02 vs ln(64) = 4.159; fixed 0.14/0.12/0.11.
Ground truth: misaligned_pairs.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import math

import torch
import torch.nn.functional as F
from common import DT, D, E, clip_loss, token_pairs
from torch import nn

THREADS = ("cloneofsimo/lora#197", "Malikanhar/Face-Sketch-to-Image-Generation-using-GAN#27")
CAUSE = "misaligned_pairs"
FAMILY = "data_labels"
BATCH = 64


class PairFolder(torch.utils.data.Dataset):
    """`files` maps a file name to (patch tokens, caption features), as a folder of images with a
    sidecar caption per image; the listing comes back in directory (hash) order, not sorted."""

    def __init__(self, files: dict, listing: list, fixed: bool):
        paths = list(listing)
        if fixed:
            paths = sorted(paths)
        self.captions = [files[p][1] for p in paths]
        self.paths = sorted(paths)  # the fault: sorted after the captions were taken from the listing
        self.files = files

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.files[self.paths[i]][0], self.captions[i]


class TwoTower(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D, 64), nn.GELU(), nn.Linear(64, E))
        self.text = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.image(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    g = torch.Generator().manual_seed(seed)
    names = [f"{int(h):08x}.jpg" for h in torch.randint(0, 2**31 - 1, (1024,), generator=g)]
    files = {n: (tokens[i], texts[i]) for i, n in enumerate(names)}
    listing = [names[i] for i in torch.randperm(len(names), generator=g)]
    data = PairFolder(files, listing, fixed)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True, generator=g)
    model = TwoTower()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    with watch(model, opt, batch_size=BATCH) as w:
        step = 0
        while step < steps:
            for tok, txt in loader:
                img, cap = model(tok, txt)
                logits = model.logit_scale.exp() * img @ cap.t()
                loss = clip_loss(logits)
                opt.zero_grad()
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": cap}, logits=logits,
                          batch_size=BATCH, inputs=tok)
                opt.step()
                step += 1
                if step >= steps:
                    break


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
