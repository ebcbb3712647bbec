"""My small CLIP (conv patch tower + GRU caption tower) barely learns: I initialised the learnable
log temperature as `nn.Parameter(torch.ones([]))`, as the early transformers CLIP port did, so the
logits are cosine x e (2.7) instead of x 14.3 and the learnable scale climbs far too slowly to
recover within the run. Thread(s): huggingface/transformers#13430 ("huggingface transformers' CLIP:
self.logit_scale = nn.Parameter(torch.ones([])) ... OpenAI CLIP: ... np.log(1 / 0.07)"; maintainer:
"not initializing the logits_scale to the right value could cause issues"); openai/CLIP#46
("shouldn't initial temperature be 0.07 ... self.logit_scale = nn.Parameter(torch.ones([]))").
Fix: initialise it at ln(1/0.07).
Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean of the last 5 losses): fault 2.757,
2.705, 2.671 vs ln(B) = 4.159 (learns worse by ~1.1 nats); fixed 1.744, 1.634, 1.488.
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # so `python case.py` finds common
import math

import torch
import torch.nn.functional as F
from torch import nn

from common import E, VOCAB, clip_loss, image_caption_pairs

THREADS = ("huggingface/transformers#13430", "openai/CLIP#46")
CAUSE = "temperature"
FAMILY = "initialisation"
BATCH = 64


class SmallCLIP(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.patch = nn.Conv2d(3, 48, kernel_size=4, stride=4)
        self.visual = nn.Sequential(nn.LayerNorm(48), nn.Linear(48, 64), nn.GELU(), nn.Linear(64, E))
        self.embed = nn.Embedding(VOCAB, 48)
        self.gru = nn.GRU(48, 64, batch_first=True)
        self.text_proj = nn.Linear(64, E)
        init = math.log(1 / 0.07) if fixed else 1.0
        self.logit_scale = nn.Parameter(torch.ones([]) * init)

    def forward(self, pixels, ids):
        patches = self.patch(pixels).flatten(2).transpose(1, 2)  # (B, 16, 48)
        img = self.visual(patches).mean(1)
        _, h = self.gru(self.embed(ids))
        txt = self.text_proj(h[-1])
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    pixels, captions = image_caption_pairs(2048, seed=seed)
    torch.manual_seed(seed)
    model = SmallCLIP(fixed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(pixels), (BATCH,), generator=g)
            img, txt = model(pixels[idx], captions[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=pixels[idx])
            opt.step(); opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
