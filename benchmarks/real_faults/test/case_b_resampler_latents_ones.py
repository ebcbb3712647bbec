"""Perceiver-resampler latents initialised with `torch.ones`: every latent query is the same vector, so all
latents attend to the same tokens and return the same output. The resampler's output tokens are flattened in
order (as the visual tokens an LM would read), and the captions describe each image region in turn, so the
model needs latents that pick out different regions; with identical latents it cannot, and Adam's small
per-row updates leave the rows near-copies for the whole run (row cosine ~1.0 at step 60).

Threads: huggingface/transformers#31151 ("The perceiver resampler in idefics2 initializes latents as ones, but
they should be initialized as random numbers with a gaussian distribution ... This should fix instability
issues for training"), lucidrains/perceiver-pytorch#16 ("I think that the latents can also be zeros?").
Fix: `torch.randn` latents.
Model: hand-written one-layer resampler (nn.MultiheadAttention cross-attention + MLP, no norm on the latents),
flattened latents -> linear projection; MLP text projector.

Validated without the tool (seeds 0,1,2; 60 steps; batch 64; mean loss over the last 12 steps): fault
0.798 / 0.896 / 0.630 vs ln(64) = 4.159 (learns worse, ~8x the fixed loss; latent rows still have pairwise
cosine >= 0.998 at step 60); fixed 0.110 / 0.090 / 0.064 (pairwise latent cosine down to -0.32). The latents
have the same norm either way (ones and std-1 rows both ~sqrt(32)), so only their sameness differs.
Ground truth: symmetric_latents.
"""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/real_faults (common.py)

import torch
import torch.nn.functional as F
from torch import nn

from common import clip_loss

THREADS = ("huggingface/transformers#31151", "lucidrains/perceiver-pytorch#16")
CAUSE = "symmetric_latents"
FAMILY = "architecture"
BATCH = 64
REGIONS, DIM, CONCEPT, TEXT = 6, 32, 4, 24


def region_pairs(n: int, seed: int):
    """Patch tokens (n, REGIONS, DIM): a fixed position code per region plus that region's own content; the
    caption feature (n, TEXT) describes every region through its own (position-specific) map."""
    g = torch.Generator().manual_seed(seed)
    content = torch.randn(n, REGIONS, CONCEPT, generator=g)
    position = 2.0 * torch.randn(REGIONS, DIM, generator=g)
    tokens = position + content @ torch.randn(CONCEPT, DIM, generator=g) + 0.3 * torch.randn(n, REGIONS, DIM, generator=g)
    describe = torch.randn(REGIONS, CONCEPT, TEXT, generator=g) / math.sqrt(REGIONS * CONCEPT)
    texts = torch.einsum("nrk,rkd->nd", content, describe) + 0.05 * torch.randn(n, TEXT, generator=g)
    return tokens, texts


class Resampler(nn.Module):
    def __init__(self, fixed: bool, num_latents: int = REGIONS):
        super().__init__()
        init = torch.randn if fixed else torch.ones
        self.latents = nn.Parameter(init(num_latents, DIM))
        self.cross_attn = nn.MultiheadAttention(DIM, num_heads=2, batch_first=True)
        self.ff = nn.Sequential(nn.LayerNorm(DIM), nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))

    def forward(self, tokens):
        x = self.latents.expand(len(tokens), -1, -1)
        x = x + self.cross_attn(x, tokens, tokens, need_weights=False)[0]
        return x + self.ff(x)                                 # (B, num_latents, DIM)


class Aligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.resampler = Resampler(fixed)
        self.proj = nn.Linear(REGIONS * DIM, 32)
        self.text = nn.Sequential(nn.Linear(TEXT, 32), nn.GELU(), nn.Linear(32, 32))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        img = self.proj(self.resampler(tokens).flatten(1))
        return F.normalize(img, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    tokens, texts = region_pairs(1024, seed)
    torch.manual_seed(seed)
    model = Aligner(fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=BATCH,
                                         shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
    step = 0
    with watch(model, opt, batch_size=BATCH) as w:
        while step < steps:
            for tok, txt in loader:
                if step >= steps:
                    break
                img, cap = model(tok, txt)
                logits = model.logit_scale.exp() * img @ cap.t()
                loss = clip_loss(logits)
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": cap}, logits=logits,
                          batch_size=BATCH, inputs=tok)
                opt.step()
                opt.zero_grad()
                step += 1


if __name__ == "__main__":
    import sys, diagnose; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + __import__("pathlib").Path(__file__).stem, **kw))
