"""DoRA adapters whose two low-rank factors are both initialised to zero: the low-rank update gets exactly
zero gradient forever, so the frozen towers can only rescale their input columns.

What the user did: parameter-efficient alignment of two frozen pretrained towers (an image tower over pooled
patch tokens and a caption tower, each a two-layer MLP into a shared space; random weights stand in for the
pretrained checkpoint). Following catid/dora's drop-in implementation, every `nn.Linear` is replaced by a
`DoRALayer` (frozen W0 and bias, trainable magnitude m = ||W0||_col, trainable low-rank factors) and only the
trainable parameters go to AdamW (lr 1e-3, as in the repository's demo).

What went wrong and why: the layer initialised *both* factors with zeros (`lora_A = zeros(d_out, r)`,
`lora_B = zeros(r, d_in)`). The update is A @ B, so dL/dA = G @ B^T = 0 and dL/dB = A^T @ G = 0 at every step:
zero is a fixed point of gradient descent and the low-rank directions never move. The only parameter that
learns is the magnitude vector m, which rescales the columns of the frozen W0 (a diagonal reweighting of
each layer's inputs); the direction of every weight matrix stays that of the frozen towers, and the two
random towers cannot be brought into alignment that way. The loss stays above ln(B). In catid/dora the fix
(PR #1, "Fixes the LoRA initialization which helps with improving the overall loss") initialises A with a
Gaussian of std 1/sqrt(r) and keeps B at zero, the LoRA recipe: the update still starts at zero but its
gradient does not.

Thread: catid/dora#1 (DoRALayer initialised lora_A and lora_B to zeros; fixed by a random lora_A, evaluation
losses 0.171 -> 0.110 and 0.064 -> 0.029 in the README).

Fix: `lora_A = randn(d_out, r) / sqrt(r)`, `lora_B = zeros(r, d_in)`.

Validation (validate.py --half test31, seeds 0/1/2, 100 steps, B=32, ln(B)=3.4657), final loss / ln(B):
fault 1.3386 / 1.0769 / 0.9466 (final loss 4.639 / 3.732 / 3.281; only the magnitudes move), fixed
0.2799 / 0.2222 / 0.2046 (final loss 0.970 / 0.770 / 0.709).

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common import DT, D, E, token_pairs


THREADS = ("catid/dora#1",)
CAUSE = "no_gradient_path"
FAMILY = "initialisation"


class DoRALayer(nn.Module):
    """Drop-in replacement for nn.Linear (catid/dora): frozen W0 and bias, trainable magnitude and factors."""

    def __init__(self, d_in, d_out, rank=4, weight=None, bias=None, fixed=False):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        # m = magnitude, column-wise across the output dimension
        self.m = nn.Parameter(self.weight.norm(p=2, dim=0, keepdim=True))
        if fixed:
            std_dev = 1 / torch.sqrt(torch.tensor(rank).float())
            self.lora_A = nn.Parameter(torch.randn(d_out, rank) * std_dev)
        else:
            self.lora_A = nn.Parameter(torch.zeros(d_out, rank))
        self.lora_B = nn.Parameter(torch.zeros(rank, d_in))

    def forward(self, x):
        lora = torch.matmul(self.lora_A, self.lora_B)
        adapted = self.weight + lora
        column_norm = adapted.norm(p=2, dim=0, keepdim=True)
        calc_weights = self.m * (adapted / column_norm)
        return F.linear(x, calc_weights, self.bias)


def replace_linear_with_dora(model: nn.Module, fixed: bool) -> None:
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            setattr(model, name, DoRALayer(module.in_features, module.out_features, weight=module.weight.data.clone(),
                                           bias=module.bias.data.clone(), fixed=fixed))
        else:
            replace_linear_with_dora(module, fixed)


class TwoTowers(nn.Module):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(D, hidden), nn.GELU(), nn.Linear(hidden, E))
        self.text = nn.Sequential(nn.Linear(DT, hidden), nn.GELU(), nn.Linear(hidden, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, tokens, texts):
        return F.normalize(self.image(tokens.mean(1)), dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B, lr = 32, 1e-3
    tokens, texts = token_pairs(1024, seed)
    model = TwoTowers()  # the pretrained towers would be loaded here
    replace_linear_with_dora(model, fixed)
    optimizer = torch.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=lr)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        labels = torch.arange(B)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
        optimizer.zero_grad()
    session.close()
