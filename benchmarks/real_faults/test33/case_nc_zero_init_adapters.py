"""An AIM-style adapter projection head whose zero-initialisation loop matches both of its Linear layers instead of
only the last one: with D_fc1 and D_fc2 both at zero no gradient reaches either, and every image embedding is one
constant vector.

What the user did: image side = frozen patch tokens -> flamingo-pytorch PerceiverResampler -> mean over latents ->
an AIM `Adapter` used as the projection head (D_fc1 -> GELU -> D_fc2, no skip connection); text side = a linear
projection of frozen text features; learnable logit scale (open_clip init); symmetric CLIP loss; AdamW.
Following AIM ("we initialize it to zero so that at the beginning of training the model is the same as the
pre-trained model"), the user zero-initialised the adapter with AIM's loop over `named_modules()`, but matched
`'D_fc' in name` where AIM matches `'D_fc2'`.

What went wrong and why: the filter also catches D_fc1, so both Linear layers of the adapter start at exactly
zero (weights and biases). The hidden activation is GELU(0) = 0, so D_fc2's weight gradient (g h^T) is zero; the
gradient sent back through D_fc2 (W2^T g) is zero, so D_fc1 and everything before it (the resampler) get zero
gradient too. Only the D_fc2 bias moves, and a bias is the same for every sample: all image embeddings are one
vector (exactly zero at step 0, so not even the text projection gets a gradient on the first step), every row of
the logits is the same, and the loss stays at ln(B) however long it trains. The AIM thread points out that
weights initialised to the same value stay the same during training (the authors: only the last adapter layer is
zeroed, so training starts from the pretrained model); LoRA's author makes the same point for A/B:
zero-initialising one factor is fine "as long as the other one is not zero".

Threads: taoyang1122/adapt-image-models#36 (constant/zero init: the weights stay the same during training; only
D_fc2 is zero-initialised), microsoft/LoRA#98 (either factor may start at zero as long as the other is not).

Fix: zero-initialise only the last layer, `'D_fc2' in name` as in AIM (D_fc1 keeps its default random init).

Validation (validate.py --half test33, B=64, ln(B)=4.1589, 100 steps, final = mean of the last 5 steps):
  fault: seed 0 4.1612 (ratio 1.0006), seed 1 4.1601 (1.0003), seed 2 4.1604 (1.0004)
  fixed: seed 0 0.1106 (0.0266), seed 1 0.1433 (0.0345), seed 2 0.1440 (0.0346)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("taoyang1122/adapt-image-models#36", "microsoft/LoRA#98")
CAUSE = "no_gradient_path"
FAMILY = "initialisation"


class Adapter(nn.Module):
    """AIM's adapter (mmaction/models/backbones/vit_clip.py), here used without the skip as a projection head."""

    def __init__(self, d_in, d_out, d_hidden, act_layer=nn.GELU, skip_connect=False):
        super().__init__()
        self.skip_connect = skip_connect
        self.act = act_layer()
        self.D_fc1 = nn.Linear(d_in, d_hidden)
        self.D_fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        xs = self.D_fc2(self.act(self.D_fc1(x)))
        return x + xs if self.skip_connect else xs


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.image_adapter = Adapter(D, E, 2 * E)  # projection head of the image side
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def init_adapters(self, pattern: str):
        for n, m in self.named_modules():
            if 'adapter' in n:
                for n2, m2 in m.named_modules():
                    if pattern in n2 and isinstance(m2, nn.Linear):
                        nn.init.constant_(m2.weight, 0)
                        nn.init.constant_(m2.bias, 0)

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0].mean(1)
        return F.normalize(self.image_adapter(lat), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 64
    tokens, texts = token_pairs(2048, seed=seed)
    model = Aligner()
    model.init_adapters('D_fc2' if fixed else 'D_fc')  # the bug: 'D_fc' also matches D_fc1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=gen)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
