"""Activation checkpointing (reentrant) wrapped around the trainable adapters that sit on frozen towers: the
checkpointed inputs do not require grad, so the adapters' outputs come back without a graph and nothing in them
is ever trained.

What the user did: a BLIP-2 / EILEV-style aligner. Image side: a frozen vision stem (stand-in for the frozen ViT,
`requires_grad_(False)`) -> a trainable flamingo-pytorch PerceiverResampler (the Q-Former role) -> mean over
latents -> projection. Text side: a frozen text stem -> a trainable 2-layer MLP adapter. To save memory both
adapters run under `torch.utils.checkpoint.checkpoint(..., use_reentrant=True)` (the long-standing default that
HF's gradient checkpointing used). Symmetric CLIP loss, learnable logit scale, AdamW over the trainable params.

What went wrong and why: the reentrant checkpoint runs the wrapped function under no_grad and only re-attaches it
to autograd through its tensor inputs; when none of them requires grad (here: the outputs of the frozen stems) the
output comes back with `requires_grad=False` and the parameters inside get no gradient at all (PyTorch only warns
"None of the inputs have requires_grad=True. Gradients will be None"). Both adapters are cut off, the only
parameter that still receives a gradient is the logit scale, and with fixed random embeddings on both sides at a
logit scale of ~13 the loss stays above ln(B). EILEV's maintainer explains that `enable_input_require_grads()` is what lets the
Q-Former train under gradient checkpointing with a frozen vision encoder ("Without it, you're essentially running
the model in eval mode"); in transformers#25841 the same frozen-input + gradient-checkpointing combination left
the adapters without gradients until the inputs were forced to require grad.

Threads: yukw777/EILEV#12 (frozen encoder + gradient checkpointing: the Q-Former gets no gradient without
enable_input_require_grads), huggingface/transformers#25841 (PEFT/adapters + gradient checkpointing: inputs must be
forced to require grad).

Fix: the thread's `enable_input_require_grads()`: a forward hook on each frozen stem that marks its output as
requiring grad, so the checkpointed adapters are re-attached to the graph (use_reentrant=False works as well).

Validation (validate.py --half test33, B=64, ln(B)=4.1589, 100 steps, final = mean of the last 5 steps):
  fault: seed 0 5.1023 (ratio 1.2268), seed 1 5.4042 (1.2994), seed 2 5.6385 (1.3558); only `logit_scale` has a
  non-zero gradient (14.29 -> 12.94 after 100 steps), both adapters end with no gradient
  fixed: seed 0 0.1930 (0.0464), seed 1 0.1822 (0.0438), seed 2 0.1785 (0.0429)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("yukw777/EILEV#12", "huggingface/transformers#25841")
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"


class ImageAdapter(nn.Module):
    """The trainable Q-Former role: PerceiverResampler -> mean over latents -> projection."""

    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)

    def forward(self, tokens):
        return self.proj(self.resampler(tokens.unsqueeze(1))[:, 0].mean(1))


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.vision_stem = nn.Linear(D, D)  # frozen "pretrained" vision tower (stand-in)
        self.text_stem = nn.Linear(DT, DT)  # frozen "pretrained" text tower (stand-in)
        self.vision_stem.requires_grad_(False)
        self.text_stem.requires_grad_(False)
        self.image_adapter = ImageAdapter()
        self.text_adapter = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def enable_input_require_grads(self):
        def make_inputs_require_grad(module, inputs, output):
            output.requires_grad_(True)

        self.vision_stem.register_forward_hook(make_inputs_require_grad)
        self.text_stem.register_forward_hook(make_inputs_require_grad)

    def forward(self, tokens, texts):
        v = self.vision_stem(tokens)
        t = self.text_stem(texts)
        img = checkpoint(self.image_adapter, v, use_reentrant=True)  # gradient checkpointing to save memory
        txt = checkpoint(self.text_adapter, t, use_reentrant=True)
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 64
    tokens, texts = token_pairs(2048, seed=seed)
    model = Aligner()
    if fixed:
        model.enable_input_require_grads()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
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
