"""A perceiver-pytorch aligner whose text head is trained quantization-aware: two fixed-point fake-quantized
linear layers (straight-through estimator) with the default 4-bit weights, 2 of them integer bits. The
quantization step (0.25) is larger than every Glorot-initialised weight can round to, so both kernels (and the
zero biases) start as exact zeros: the text embedding is the zero vector, every gradient in the model is zero,
and the CLIP loss sits at exactly ln(B) for the whole run.

What the user did: calad0i/HGQ2#11 builds quantized dense layers with the library defaults on a standard
Glorot init: "With the default weight config (b0=4, i0=2), the number of fractional bits is f = b - i = 2 the
quantization step is 2^-2 = 0.25. This means that weights with |w| < 0.125 are rounded to zero ... the whole
kernel is quantized to zero immediately after build()", and "Training still runs, but the model starts from a
degenerate all-zero quantized kernel ... this made training difficult to recover from". In calad0i/HGQ2#13
the layers "receive zero gradients on kernel weights during training"; the maintainer: "Same cause as #11,
some weights are initialized to zeros and gradient vanishes ... you can increase the initial number of
fractional bits for weights". Here the text head is `FixedPointLinear(24, 512) -> GELU -> FixedPointLinear(
512, 32)` with the default `bits=4, int_bits=2`.

What went wrong and why: Glorot-uniform bounds are sqrt(6 / (24 + 512)) = 0.106 and sqrt(6 / (512 + 32)) =
0.105, both below half the step, so the forward pass sees W1 = 0, W2 = 0 and zero biases. The hidden
activation is GELU(0) = 0 and the head outputs 0 for every caption, so the normalised text rows are zero and
all logits are 0 (loss = ln(B)). The straight-through gradient of W2 is g h^T = 0 (h = 0), that of W1 goes
through the quantized W2 = 0, and with zero text rows the image tower and the logit scale get zero gradients
too. Only the float bias of the last layer gets a gradient, and Adam at lr 1e-3 moves it by at most ~0.1 in
100 steps, never past the 0.125 rounding threshold: the model starts from, and stays at, an all-zero text
head.

The fix: more fractional bits, as the maintainer suggests: `bits=8` (6 fractional bits, step 1/64), so the
initial weights survive quantization and gradients flow.

Validation (validate.py, 100 steps, B = 64, chance ln(B) = 4.159; final loss / ln(B)):
    seed 0: fault 1.000, fixed 0.022
    seed 1: fault 1.000, fixed 0.022
    seed 2: fault 1.000, fixed 0.019

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, E, PerceiverAligner, clip_loss, token_pairs

THREADS = ("calad0i/HGQ2#11", "calad0i/HGQ2#13")
CAUSE = "no_gradient_path"
FAMILY = "initialisation"

B = 64
HIDDEN = 512


class FixedPointLinear(nn.Linear):
    """Linear layer trained with fixed-point fake quantization of its weight and bias (straight-through
    estimator): `bits` total bits, `int_bits` of them integer; Glorot-uniform weights, zero bias."""

    def __init__(self, in_features: int, out_features: int, bits: int = 4, int_bits: int = 2):
        super().__init__(in_features, out_features)
        self.step = 2.0 ** -(bits - int_bits)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def quantize(self, w):
        return w + (torch.round(w / self.step) * self.step - w).detach()

    def forward(self, x):
        return F.linear(x, self.quantize(self.weight), self.quantize(self.bias))


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(n=4096, seed=seed)
    model = PerceiverAligner()
    bits = 8 if fixed else 4
    model.text = nn.Sequential(FixedPointLinear(DT, HIDDEN, bits=bits), nn.GELU(),
                               FixedPointLinear(HIDDEN, E, bits=bits))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    session = watch(model, optimizer, batch_size=B)
    g = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B)
        optimizer.step()
    session.close()
