"""fp16 autocast: F.normalize of an all-zero caption embedding is 0/0 = NaN, because its eps=1e-12 is 0 in fp16.

What the user did: a LiT-style aligner trained with mixed precision (torch.autocast(float16) + GradScaler, the
AMP recipe): a flamingo-pytorch PerceiverResampler over frozen patch tokens with a linear head on the image
side; on the text side, caption features cached from a frozen text encoder and a CLIP-style bias-free
`text_projection` matrix; both embeddings go through `F.normalize` before the scaled dot product. The caption
cache stores an all-zero feature for the ~5% of images whose alt-text is empty (missing caption).

What went wrong and why: under autocast the projection runs in float16, so a missing caption gives an embedding
row of exact zeros in float16, and `F.normalize(x) = x / x.norm().clamp_min(eps)` with the default eps=1e-12:
1e-12 is below float16's smallest subnormal (6e-8), it rounds to 0, the clamp does nothing and the row becomes
0/0 = NaN. That NaN row and column poison the whole logit matrix, so every batch holding one empty caption
(1-0.95**32 ~ 80% of them) has a NaN loss and NaN gradients. GradScaler skips those steps and halves its scale
each time (65536 -> 1e-17..1e-22 by the end), so the run only updates on the rare clean batches and the logged
training loss is NaN on 70-88% of the steps, the last ones included. In fp32 the same rows would normalise to
zero vectors (a harmless ln(B) row). pytorch#32137 ("normalize epsilon too small for half precision ... This
causes nans in half precision when the norm is evaluated as zero"; the maintainers agreed the eps is the problem
and suggested passing a larger eps in half precision) and pytorch#61954 (the same NaN from `F.normalize` under
`autocast`, traced to `clamp_min` not working for float16; normalising `x.float()` works) are this bug.

The fix (fixed=True), the one the threads settle on: an eps that exists in float16, `F.normalize(x, dim=-1,
eps=1e-4)`, so an empty caption normalises to a zero row (a harmless ln(B) row) instead of NaN. (Casting to
float32 before normalising, pytorch#61954's workaround, fixes the forward only: the backward of a zero row is
grad/eps = 1e12-scale, which is inf once cast back to the float16 projection, and 0 * inf = NaN gradients;
#32137: "1e-5 seems to be too low, 1e-4 works".) GradScaler then settles at a scale of 16 and the run learns
like its float32 twin.

Validation (validate.py --half test30, stand-in watch, CPU, 1 thread; final = mean of the last 5 steps,
B = 32, ln B = 3.4657):
    seed 0: fault non-finite (NaN from step 1, on 85% of steps), fixed 0.5278 (0.152 ln B)
    seed 1: fault non-finite (NaN from step 1, on 70% of steps), fixed 0.2385 (0.069 ln B)
    seed 2: fault non-finite (NaN from step 0, on 88% of steps), fixed 0.6370 (0.184 ln B)

Threads: pytorch/pytorch#32137, pytorch/pytorch#61954.

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import D, DT, E, clip_loss, token_pairs

THREADS = ("pytorch/pytorch#32137", "pytorch/pytorch#61954")
CAUSE = "nonfinite_divergence"
FAMILY = "mixed precision"


class LiTAligner(nn.Module):
    """Patch tokens -> PerceiverResampler -> mean of latents -> linear; cached caption features -> CLIP-style
    bias-free text projection; both L2-normalised (F.normalize, eps=norm_eps)."""

    def __init__(self, norm_eps: float = 1e-12):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.visual_proj = nn.Linear(D, E)
        self.text_projection = nn.Parameter(torch.randn(DT, E) * DT ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.norm_eps = norm_eps

    def forward(self, tokens, caption_feats):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        img = self.visual_proj(lat.mean(1))
        txt = caption_feats @ self.text_projection
        return F.normalize(img, dim=-1, eps=self.norm_eps), F.normalize(txt, dim=-1, eps=self.norm_eps)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    tokens, captions = token_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)
    empty = torch.rand(len(captions), generator=g) < 0.05  # images whose alt-text is empty
    captions[empty] = 0.0  # the caption cache stores a zero feature for them

    model = LiTAligner(norm_eps=1e-4 if fixed else 1e-12)  # 1e-12: F.normalize's default
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    scaler = torch.amp.GradScaler("cpu")

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        with torch.autocast("cpu", dtype=torch.float16):
            img, txt = model(tokens[idx], captions[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        scaler.step(optimizer)
        scaler.update()
    session.close()
