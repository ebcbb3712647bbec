"""Patch tokens go through a flamingo-pytorch PerceiverResampler and a projection, captions through a small
MLP; both are L2-normalised and the InfoNCE loss uses a fixed temperature `tem = 0.07` from the config.
The line that builds the similarity matrix never divides by `tem`, so the cross-entropy sees raw cosines
in [-1, 1]: even perfectly aligned pairs cannot make the softmax confident over 64 captions, and the loss
flattens far above zero.

Thread: huiserwang/ContrastMask#4 ("Did you forgot to divide "tem" on this line in your code?" / "Yes, I forgot it.")
Fix: divide the similarity matrix by `tem` before the cross-entropy.
Validated without the tool (seeds 0,1,2; 80 steps; batch 64; final = mean of the last 5 steps): fault final loss 3.32/3.31/3.31 (= 0.80/0.80/0.80 ln(B)); fixed 0.29/0.21/0.23 (= 0.07/0.05/0.06 ln(B)).
Ground truth: temperature.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("huiserwang/ContrastMask#4",)
CAUSE = "temperature"
FAMILY = "normalisation and temperature"
BATCH = 64
CONFIG = {"lr": 1e-3, "tem": 0.07, "latents": 8}


class ResamplerTextAligner(nn.Module):
    def __init__(self, latents: int):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=latents)
        self.proj = nn.Linear(D, E)
        self.text = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]          # (B, latents, D)
        img = F.normalize(self.proj(lat.mean(1)), dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 80, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerTextAligner(CONFIG["latents"])
    opt = torch.optim.AdamW(model.parameters(), lr=CONFIG["lr"], weight_decay=0.05)
    tem = CONFIG["tem"]
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model(tokens[idx], texts[idx])
            sim = torch.mm(img, txt.t())
            if fixed:
                sim = sim / tem
            loss = clip_loss(sim)
            opt.zero_grad(); loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=sim,
                      batch_size=BATCH, inputs=tokens[idx])
            opt.step()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
