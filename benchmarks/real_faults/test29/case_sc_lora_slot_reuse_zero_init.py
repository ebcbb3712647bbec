"""A multi-adapter LoRA layer whose adapter slot is cleared (A and B zeroed) and then reused with an init that
only zeroes B, assuming A still holds random values: both LoRA factors start at zero and never move.

What the user did: a frozen alignment model (a perceiver-pytorch Perceiver over frozen patch tokens, a linear
image projection, a two-layer caption MLP; its weights stand in for a pretrained checkpoint) served with several
LoRA adapter slots on the projection layers, as multi-tenant LoRA trainers keep them (one rank-8 (A, B) pair per
slot, the active slot picked per job). When a job ends its slot is released with `clear_lora_adapter(slot)`,
which zeroes A and B; the next job takes the free slot with `init_lora_adapter(slot)`, written to set B to zero
"as LoRA does" and leave A alone, then trains the slot's factors and the logit scale with the CLIP loss.

What went wrong and why: LoRA needs exactly one of its two factors at zero. The update is
scaling * B @ A @ x, so dL/dB = g (A x)^T and dL/dA = B^T g x^T: with A = 0 the gradient of B is zero and with
B = 0 the gradient of A is zero. After `clear_lora_adapter` both are zero, `init_lora_adapter` leaves A at zero,
and every adapter weight gets an exactly-zero gradient at every step: the adapter output stays 0, the frozen
base is all that embeds the images and captions, and the loss sits around ln(B) (only the logit scale moves). In
the thread the same happened when an adapter slot was cleared and reused: "both lora_A and lora_B are zero,
resulting in zero gradients during training"; the fix makes the init "fully initialize the adapter (lora_A with
he_uniform, lora_B with zeros) instead of assuming lora_A has valid random values".

Thread: NovaSky-AI/SkyRL#852.

Fix: re-initialise A as well when a slot is (re)initialised (Kaiming/He uniform for A, zeros for B).

Validation (validate.py --half test29, seeds 0 1 2, 100 steps, B=32, ln(B)=3.4657; final = mean of the last 5
steps): fault final loss (seeds 0 / 1 / 2) 3.9835 / 4.4864 / 4.3173 = 1.1494 / 1.2945 / 1.2457 (above ln(B): only
the logit scale moves); fixed 0.1518 / 0.1567 / 0.1469 = 0.0438 / 0.0452 / 0.0424.

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("NovaSky-AI/SkyRL#852",)
CAUSE = "no_gradient_path"
FAMILY = "initialisation"

B = 32
SLOTS, RANK, ALPHA = 4, 8, 16


class MultiLoraLinear(nn.Module):
    """Frozen base layer + one (A, B) LoRA pair per adapter slot; `active` picks the slot used in forward."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base, self.scaling, self.active = base, ALPHA / RANK, 0
        self.lora_A = nn.Parameter(torch.empty(SLOTS, RANK, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(SLOTS, base.out_features, RANK))
        for s in range(SLOTS):
            nn.init.kaiming_uniform_(self.lora_A.data[s], a=math.sqrt(5))

    def forward(self, x):
        a, b = self.lora_A[self.active], self.lora_B[self.active]
        return self.base(x) + (x @ a.t() @ b.t()) * self.scaling


def lora_layers(model):
    return [m for m in model.modules() if isinstance(m, MultiLoraLinear)]


@torch.no_grad()
def clear_lora_adapter(model, slot: int) -> None:
    for m in lora_layers(model):
        m.lora_A[slot].zero_()
        m.lora_B[slot].zero_()


@torch.no_grad()
def init_lora_adapter(model, slot: int, init_a: bool) -> None:
    for m in lora_layers(model):
        if init_a:  # the thread's fix: A is re-drawn, not assumed to still be random
            nn.init.kaiming_uniform_(m.lora_A[slot], a=math.sqrt(5))
        m.lora_B[slot].zero_()
        m.active = slot


def build_model() -> nn.Module:
    model = PerceiverAligner()
    model.requires_grad_(False)  # pretrained stand-in: frozen
    model.proj = MultiLoraLinear(model.proj)
    model.text[0] = MultiLoraLinear(model.text[0])
    model.text[2] = MultiLoraLinear(model.text[2])
    model.logit_scale.requires_grad_(True)
    return model


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = build_model()
    slot = 0
    clear_lora_adapter(model, slot)  # the previous job on slot 0 is done: release the slot
    init_lora_adapter(model, slot, init_a=fixed)  # the new job takes slot 0
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed + 1)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
