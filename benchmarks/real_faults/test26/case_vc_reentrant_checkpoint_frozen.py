"""Activation checkpointing (reentrant) around the trainable resampler adapter, whose only input comes out of
the frozen vision backbone: the adapter silently gets no gradient at all.

What the user did: LiT-style alignment with both towers frozen -- a frozen vision backbone block over the
patch tokens and a frozen text tower (its embeddings are the fixed target space) -- and a trainable adapter
between them: a flamingo-pytorch PerceiverResampler, mean over latents, a linear projection. To save
activation memory the user wraps the adapter in `torch.utils.checkpoint.checkpoint(self.adapter, feats,
use_reentrant=True)`, passing `use_reentrant=True` explicitly because that is what PyTorch's warning says
keeps "the current default behavior" (and what the HF Trainer used by default). The optimizer holds the
parameters with `requires_grad` (adapter + logit scale).

What went wrong, and why: the reentrant checkpoint is an autograd Function whose output requires grad only
if one of its *inputs* does; the adapter's own parameters are not inputs. Its only input is the frozen
backbone's output, which does not require grad, so the adapter's output is a constant to autograd: the
resampler and the projection receive no gradient on any step (PyTorch only warns "None of the inputs have
requires_grad=True. Gradients will be None"). The loss still has a graph through the logit scale, so
`backward()` raises nothing; the logit scale is the only thing that moves, the embeddings stay those of the
random adapter, and the loss stays above ln(B) (5.2-5.8: unaligned embeddings at logit scale ~14). "At
least one input and output must have requires_grad=True for the reentrant variant. If this condition is
unmet, the checkpointed part of the model will not have gradients." (PyTorch's checkpoint docs, quoted by
the maintainer in #26221.)

Threads: huggingface/transformers#26221 (LoRA on a frozen model + gradient checkpointing: the Trainer reset
the checkpointing to the reentrant default, the checkpointed part got no gradients; fix
`gradient_checkpointing_kwargs={"use_reentrant": False}`); mlfoundations/open_clip#573 (open_clip
fine-tuning with --grad-checkpointing: "None of the inputs have requires_grad=True. Gradients will be None";
`use_reentrant=False` in transformer.py made the warning go and the train/val loss and retrieval improve).

Fix (fixed=True): `checkpoint(self.adapter, feats, use_reentrant=False)`: the non-reentrant variant records
the adapter's parameters whatever its inputs, and the adapter learns.

Validation (validate.py, seeds 0/1/2, 100 steps, B=64, ln(64)=4.1589; final loss, ratio = final/ln B):
  fault: 5.7933 / 5.1908 / 5.8451 (ratio 1.3930 / 1.2481 / 1.4054)
  fixed: 0.4682 / 0.5434 / 0.4439 (ratio 0.1126 / 0.1307 / 0.1067)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from common import DT, D, E, token_pairs
from torch import nn
from torch.utils.checkpoint import checkpoint

THREADS = ("huggingface/transformers#26221", "mlfoundations/open_clip#573")
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"

B = 64


class FrozenVisionBlock(nn.Module):
    """Stands in for the last block of the frozen, pretrained vision backbone."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class Adapter(nn.Module):
    """The trainable part: Perceiver resampler over the patch features -> mean over latents -> projection."""

    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)

    def forward(self, feats):
        lat = self.resampler(feats.unsqueeze(1))[:, 0]
        return self.proj(lat.mean(1))


class LockedTowersAligner(nn.Module):
    def __init__(self, use_reentrant: bool = True):
        super().__init__()
        self.backbone = FrozenVisionBlock()
        self.adapter = Adapter()
        self.text_tower = nn.Sequential(nn.Linear(DT, E), nn.GELU(), nn.Linear(E, E))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.gradient_checkpointing = True
        self.use_reentrant = use_reentrant
        self.backbone.requires_grad_(False)  # pretrained towers stay locked
        self.text_tower.requires_grad_(False)

    def encode_image(self, tokens):
        feats = self.backbone(tokens)
        if self.gradient_checkpointing and self.training:
            return checkpoint(self.adapter, feats, use_reentrant=self.use_reentrant)
        return self.adapter(feats)

    def forward(self, tokens, texts):
        img = F.normalize(self.encode_image(tokens), dim=-1)
        txt = F.normalize(self.text_tower(texts), dim=-1)
        return img, txt


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = LockedTowersAligner(use_reentrant=not fixed)  # the fix: use_reentrant=False
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(B)
    per_epoch = len(tokens) // B
    session = watch(model, optimizer, batch_size=B)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="None of the inputs have requires_grad")  # the user silenced it
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
