"""LoRA adapters injected before the model's `init_weights()`: the init zeroes lora_A as well as lora_B, so
both LoRA factors start at zero and neither ever gets a gradient.

What the user did: LoRA fine-tuning of a pretrained alignment model (flamingo-pytorch PerceiverResampler
over frozen patch tokens -> mean over latents -> `proj`; linear text head `text`; learnable logit scale).
The base is frozen and rank-8 LoRA adapters go on the two output heads. The model follows the DiT-style
build sequence of the thread: construct the network, inject the LoRA adapters (while building, like
`build_net` -> `add_lora`), call the network's own `init_weights()`, then load the pretrained checkpoint with
`strict=False` (PEFT-style `base_layer` names for the wrapped heads; the LoRA keys are "missing", as
expected). The network's `init_weights()` zero-initialises every `nn.Linear` inside its output heads (DiT's
zero-init of the final layer; the checkpoint overwrites the base weights anyway) -- and by then the heads
contain the LoRA `lora_A` / `lora_B` linears too.

What went wrong, and why: after the checkpoint load the base weights are the pretrained ones, but lora_A and
lora_B are both all zeros (LoRA's own kaiming init of A was overwritten). With W = W0 + B A, the gradient of
A is B^T dL/dW = 0 and the gradient of B is dL/dW A^T = 0: both factors sit at an exact saddle, the optimizer
steps them by exactly zero every step, the adapted heads stay the frozen pretrained heads and the loss does
not move from where the base model starts (here 5.5-6.6, above ln(B): the base has never seen these pairs).
Nothing errors; the trainable-parameter count even looks right.

Threads: nvidia-cosmos/cosmos-predict2.5#15 ("fix lora initialization problem. Original method leads lora-A
initialization all zeros --> No training": adding LoRA before `init_weights` left lora_A at zero; "Add lora
after init_weights can fix that"); Guitaricet/relora#18 (a ReLoRA wrapper initialising A to zero as well as
B; the reporter's point, unanswered by a fix there: with both at zero the gradient of A is B^T dL/dW and that
of B is dL/dW A^T, both zero for good, so training is stuck).

Fix (fixed=True): init_weights() and the checkpoint load first, LoRA injected afterwards (A kaiming, B zero,
as in LoRA/PEFT): B gets a gradient on the first step and the adapters learn.

Validation (validate.py, seeds 0/1/2, 100 steps, B=64, ln(64)=4.1589; final loss, ratio = final/ln B):
  fault: 6.6245 / 5.4670 / 5.7024 (ratio 1.5929 / 1.3145 / 1.3711)
  fixed: 1.0367 / 0.8220 / 0.6251 (ratio 0.2493 / 0.1976 / 0.1503)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from common import DT, D, E, token_pairs
from torch import nn

THREADS = ("nvidia-cosmos/cosmos-predict2.5#15", "Guitaricet/relora#18")
CAUSE = "no_gradient_path"
FAMILY = "initialisation"

B = 64
RANK, ALPHA = 8, 16


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * lora_B(lora_A(x)); base frozen. A kaiming, B zero (LoRA / PEFT)."""

    def __init__(self, base: nn.Linear, r: int = RANK, alpha: int = ALPHA):
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        self.scaling = alpha / r
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x))


def add_lora(model: nn.Module, targets=("proj", "text")) -> None:
    for name in targets:
        setattr(model, name, LoRALinear(getattr(model, name)))


class AlignmentNet(nn.Module):
    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def init_weights(self) -> None:
        for m in self.resampler.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
        # output heads start at zero (DiT final-layer style); the checkpoint fills them in
        for head in (self.proj, self.text):
            for m in head.modules():
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        nn.init.constant_(self.logit_scale, math.log(1 / 0.07))

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]
        img = F.normalize(self.proj(lat.mean(1)), dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        return img, txt


def pretrained_checkpoint(seed: int) -> dict:
    """The released base weights (a stand-in: another instance's weights; nothing is downloaded)."""
    torch.manual_seed(10_000 + seed)
    return AlignmentNet().state_dict()


def build_model(seed: int, lora_before_init: bool) -> AlignmentNet:
    ckpt = pretrained_checkpoint(seed)
    torch.manual_seed(seed)
    net = AlignmentNet()
    if lora_before_init:
        add_lora(net)  # injected while building the net, as in the thread's build_net()
    net.init_weights()
    if lora_before_init:  # the wrapped heads hold the checkpoint's weights under `base_layer` (PEFT naming)
        ckpt = {(k.split(".", 1)[0] + ".base_layer." + k.split(".", 1)[1] if k.split(".", 1)[0] in ("proj", "text")
                 else k): v for k, v in ckpt.items()}
    net.load_state_dict(ckpt, strict=False)  # lora_* keys are missing: expected
    if not lora_before_init:
        add_lora(net)  # the fix: LoRA after init_weights and the load
    for name, p in net.named_parameters():
        p.requires_grad_("lora_" in name)
    return net


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    tokens, texts = token_pairs(1024, seed=seed)
    model = build_model(seed, lora_before_init=not fixed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(B)
    per_epoch = len(tokens) // B
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(len(tokens), generator=g)
        idx = order[(step % per_epoch) * B:(step % per_epoch + 1) * B]
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B)
        optimizer.step()
    session.close()
