"""Small CNN image encoder + projection head, caption encoder = word embeddings (concatenated) + MLP. My
training step reuses the `encode()` helper I wrote for building the retrieval index, and that helper
runs the CNN under `torch.no_grad()`. The loss goes down somewhat (the heads train) but stays far above
what the same model reaches; the CNN weights never change.
Thread(s): rll-research/cic#5 ("the observations are encoded inside torch.no_grad which means that
there is no gradient calculation for the CNN, which means that the CNN weights will not be updated
during pre-training"); edreisMD/ConVIRT-pytorch#7 ("I tried setting freeze layer None and delete with
torch.no_grad(), the loss go down quickly"). Fix: run the encoder with gradients in the training step.
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean loss of the last 12 steps): fault
3.564 / 3.975 / 4.018 (near chance on 2 seeds) vs ln(64) = 4.159; fixed 2.063 / 2.767 / 2.613 (1.0-1.5 nats lower).
Ground truth: no_gradient_path.
"""
import contextlib
import math

import torch
import torch.nn.functional as F
from common import SEQ, VOCAB, E, image_caption_pairs
from torch import nn

THREADS = ("rll-research/cic#5", "edreisMD/ConVIRT-pytorch#7")
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64


class ImageEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.GELU(),
                                 nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GELU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, E))


class CaptionEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.head = nn.Sequential(nn.Linear(SEQ * 16, 64), nn.GELU(), nn.Linear(64, E))

    def forward(self, ids):
        return self.head(self.emb(ids).flatten(1))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = ImageEncoder()
        self.caption = CaptionEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode(self, pixels, grad: bool = False):
        ctx = contextlib.nullcontext() if grad else torch.no_grad()
        with ctx:
            feats = self.image.cnn(pixels)
        return self.image.head(feats)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(1024, seed)
    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    gen = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(pixels), (BATCH,), generator=gen)
            img = F.normalize(model.encode(pixels[idx], grad=fixed), dim=-1)
            txt = F.normalize(model.caption(ids[idx]), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            target = torch.arange(BATCH)
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=pixels[idx])
            opt.step()


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
