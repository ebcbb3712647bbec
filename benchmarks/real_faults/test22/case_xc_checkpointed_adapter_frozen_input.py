"""Locked-text alignment with the trainable image adapter wrapped in reentrant activation checkpointing:
its input comes from a frozen backbone and does not require grad, so the adapter gets no gradient at all.

What the user did: LiT-style alignment. The text tower is frozen (a locked projection of pooled text
features, `requires_grad_(False)`); the trainable part is an image adapter (flamingo-pytorch
PerceiverResampler over the frozen backbone's patch tokens, mean over latents, a projection), plus the
learnable logit scale. To save activation memory the adapter call is wrapped in
`torch.utils.checkpoint.checkpoint(self.adapter, tokens, use_reentrant=True)`. The optimizer holds the
trainable parameters; nothing errors (the loss still requires grad through the logit scale), only a
UserWarning "None of the inputs have requires_grad=True. Gradients will be None".

What went wrong and why: reentrant checkpointing runs the wrapped function under no_grad and decides
whether its output joins the graph only from its tensor inputs. The patch tokens come from a frozen
backbone and do not require grad, so the adapter's output is a constant to autograd: every resampler and
projection parameter keeps `.grad = None`, and the optimizer only ever moves the logit scale. The image
embeddings stay the random initial map of the tokens, unaligned with the locked text space: the loss stays
above ln(B) for the whole run.

Threads: pytorch/pytorch#7617 (when none of the inputs requires grad, the output of checkpoint(...) does
not require grad either, although the function holds trainable parameters; documented as unsupported by
the reentrant variant),
discuss.pytorch.org/t/use-of-torch-utils-checkpoint-checkpoint-causes-simple-model-to-diverge/116271
(checkpointing the first block, whose input does not require grad, "causes every gradient in cnn_block_1
to stay fixed"; removing that checkpoint made the model converge).

Fix (fixed=True): the non-reentrant checkpoint, `use_reentrant=False` (PyTorch's recommended variant),
which records the parameters' graph whatever the inputs require.

Validation (validate.py --half test22, B=32, 100 steps, final loss / ln B):
  fault: seed 0 1.4340, seed 1 1.3604, seed 2 1.3992 (only `logit_scale` ever has a .grad)
  fixed: seed 0 0.0346, seed 1 0.0391, seed 2 0.0394

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("pytorch/pytorch#7617",
           "discuss.pytorch.org/t/use-of-torch-utils-checkpoint-checkpoint-causes-simple-model-to-diverge/116271")
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"

B = 32
LR = 1e-3


class LockedTextAligner(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.fixed = fixed
        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E).requires_grad_(False)  # locked text tower
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def adapter(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.resampler(tokens.unsqueeze(1))[:, 0].mean(1))

    def forward(self, tokens, texts):
        img = checkpoint(self.adapter, tokens, use_reentrant=not self.fixed)
        img = F.normalize(img, dim=-1)
        txt = F.normalize(self.text(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = LockedTextAligner(fixed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    try:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (B,), generator=gen)
            tok, txt_in = tokens[idx], texts[idx]
            img, txt = model(tok, txt_in)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B, inputs=tok)
            optimizer.step()
            optimizer.zero_grad()
    finally:
        session.close()
