"""Continuing to train a LoRA adapter that was loaded the way `PeftModel.from_pretrained` loads one by default:
in inference mode, every adapter weight frozen.

What the user did: a frozen alignment model (a flamingo-pytorch Perceiver resampler over frozen patch tokens,
image and caption projections; its weights stand in for a pretrained checkpoint) with rank-8 LoRA adapters on
the two projections, as PEFT wraps target modules. The adapter of an earlier run was saved, and the training
script reloads it with a `from_pretrained`-style loader that, like `PeftModel.from_pretrained(model, path)`,
defaults to `is_trainable=False`, then builds the optimizer over the parameters that require gradients plus its
contrastive head's learnable logit scale and trains with the CLIP loss.

What went wrong and why: loading in inference mode sets `requires_grad=False` on every LoRA weight. The base
model is frozen on purpose, so nothing on the path from the patch tokens and captions to the embeddings can be
updated: the adapter gets no gradient and is not in the optimizer (the `requires_grad` filter drops it). The only
thing that trains is the logit scale, which cannot align anything; the loss stays at ln(B) while the run looks
normal (finite loss, an optimizer that steps). In the thread `print_trainable_parameters()` after
`PeftModel.from_pretrained()` read "trainable params: 0"; the maintainers explained that `from_pretrained()` now
loads the adapter "in frozen mode, i.e., non trainable mode", controlled by `is_trainable`; alpaca-lora users hit
the same "trainable params: 0" when loading LoRA weights to fine-tune further, answered with "add
`is_trainable=True`".

Threads: huggingface/peft#282, tloen/alpaca-lora#352.

Fix: load the adapter for training (`is_trainable=True`), so its weights require gradients and enter the
optimizer.

Validation (validate.py --half test29, seeds 0 1 2, 100 steps, B=32, ln(B)=3.4657; final = mean of the last 5
steps): fault final loss (seeds 0 / 1 / 2) 4.8509 / 4.3680 / 4.3464 = 1.3997 / 1.2603 / 1.2541 (above ln(B): the
frozen random-like base mis-ranks pairs and only the logit scale moves); fixed 0.0754 / 0.1274 / 0.1297 = 0.0217 /
0.0368 / 0.0374.

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("huggingface/peft#282", "tloen/alpaca-lora#352")
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"

B = 32
TARGETS = ("proj", "text")


class LoraLinear(nn.Module):
    """A PEFT-style LoRA wrapper: frozen base layer + scaling * B(A(x)), A Kaiming-uniform, B zero."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: int = 16):
        super().__init__()
        self.base, self.scaling = base, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling


def get_lora_model(model: nn.Module, targets=TARGETS) -> nn.Module:
    model.requires_grad_(False)  # the base stays frozen
    for name in targets:
        setattr(model, name, LoraLinear(getattr(model, name)))
    return model


def adapter_state_dict(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def load_lora_model(model: nn.Module, adapter: dict, is_trainable: bool = False) -> nn.Module:
    """Same contract as PeftModel.from_pretrained: the adapter is loaded in inference mode unless is_trainable."""
    model = get_lora_model(model)
    model.load_state_dict(adapter, strict=False)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(is_trainable)
    return model


class ContrastiveHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, img, txt):
        return self.logit_scale.exp() * img @ txt.t()


class Wrapped(nn.Module):
    def __init__(self, model, head):
        super().__init__()
        self.model, self.head = model, head


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    # the adapter saved by the earlier run (here: freshly created and saved, as after get_peft_model + save)
    adapter = adapter_state_dict(get_lora_model(ResamplerAligner()))
    torch.manual_seed(seed)
    base = ResamplerAligner()  # the pretrained checkpoint, same weights as when the adapter was created
    model = load_lora_model(base, adapter, is_trainable=fixed)  # the user's call: is_trainable left at its default
    head = ContrastiveHead()
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed + 1)
    session = watch(Wrapped(model, head), optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = head(img, txt)
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
