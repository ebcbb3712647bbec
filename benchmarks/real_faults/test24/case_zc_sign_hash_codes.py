"""Cross-modal hashing head that binarises with `torch.sign` in the training forward: nothing upstream learns.

What the user did: a vision->text retrieval model with binary codes (cross-modal hashing). Patch tokens from a
frozen backbone go through a flamingo-pytorch PerceiverResampler, the mean latent through a linear "hash layer",
and the caption features through a small MLP and their own hash layer. Both towers end in `torch.sign(...)`
so that image and caption are compared as {-1, +1} codes (scaled to unit length), and the symmetric CLIP loss
is taken over a learnable logit scale, trained with AdamW.

What went wrong and why: `torch.sign` is piecewise constant, so autograd gives it a zero derivative everywhere.
Every parameter behind the sign (resampler, both hash layers, the text MLP) gets an all-zero gradient on every
step; AdamW only decays them, which the sign ignores, so the codes stay the random codes of the initialisation,
unrelated between the two towers. The only parameter with a non-zero gradient is the logit scale, which can only
shrink the logits toward the uniform softmax: the loss starts above ln(B) and drifts down toward it. No error,
no NaN.

Thread: snap-stanford/GEARS#36 (a loss term built on `torch.sign`: "torch.sign blocks the backward of
gradient", the reporter's toy shows `x.grad == 0` for every input; the maintainer confirms PyTorch zeros the
gradient through the sign and that they had assumed a continuous approximation such as tanh was used),
snap-stanford/GEARS#86 (raised again; the maintainer: the sign function is not differentiable, this is an error,
circumvent it with `torch.tanh`).

The fix (the threads'): use the continuous relaxation `torch.tanh` in the training forward (binarise with
`sign` only when exporting codes for retrieval).

Validation (benchmarks/real_faults/validate.py --half test24, seeds 0 1 2, final loss / ln(B), B = 32):
fault 1.3938 / 1.3805 / 1.4251 (ln(32) = 3.466; the logit scale is the only parameter with a non-zero
gradient, still shrinking at step 100), fixed 0.0221 / 0.0290 / 0.0221.

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("snap-stanford/GEARS#36", "snap-stanford/GEARS#86")
CAUSE = "no_gradient_path"
FAMILY = "architecture"

B = 32


class HashAligner(nn.Module):
    def __init__(self, binarise):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.binarise = binarise
        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.img_hash = nn.Linear(D, E)
        self.text_mlp = nn.Sequential(nn.Linear(DT, 64), nn.GELU(), nn.Linear(64, D))
        self.txt_hash = nn.Linear(D, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0].mean(1)
        img_codes = self.binarise(self.img_hash(lat))
        txt_codes = self.binarise(self.txt_hash(self.text_mlp(texts)))
        # codes in {-1, +1}^E have norm sqrt(E): unit length for a cosine-style similarity
        return F.normalize(img_codes, dim=-1), F.normalize(txt_codes, dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(2048, seed)
    model = HashAligner(torch.tanh if fixed else torch.sign)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
        optimizer.step()
    session.close()
