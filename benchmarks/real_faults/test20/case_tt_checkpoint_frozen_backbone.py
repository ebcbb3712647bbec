"""Activation checkpointing (reentrant) around a trainable resampler that sits on a frozen backbone: the
checkpointed block gets no gradient at all, so the adapter never trains.

What the user did: align a vision adapter to a frozen text encoder. The last block of the pretrained
vision backbone (`backbone_head`, a Linear + LayerNorm over the patch tokens) and the whole text encoder
are frozen with `requires_grad_(False)`; the trainable part is a flamingo-pytorch PerceiverResampler +
projection (`adapter`) and the logit scale. To save activation memory the user wraps the adapter in
`torch.utils.checkpoint.checkpoint(self.adapter, feats, use_reentrant=True)` (the reentrant variant,
checkpoint's long-standing default). Symmetric CLIP loss, AdamW on the parameters that require
grad.

What went wrong and why: the reentrant checkpoint runs its function under no_grad and its output only
requires grad if one of its *tensor inputs* does; the parameters inside the checkpointed module do not
count. Here the only input is the frozen backbone's output, which does not require grad, so the adapter's
output is a constant as far as autograd is concerned (torch only warns "None of the inputs have
requires_grad=True. Gradients will be None"). `loss.backward()` still succeeds because the learnable
logit scale is in the graph, so nothing fails loudly: the scale moves, the resampler and projection get
`grad=None` on every step and keep their random init, and the loss stays above ln(B).

The threads: huggingface/transformers#16276, a user who checkpointed each BERT layer by hand and froze the
embeddings plus the first layers found the loss trace "exactly the same" whatever was frozen; freezing the
input side of a reentrant checkpoint disables the gradient of every checkpointed layer after it. The
PyTorch forum thread (use-of-torch-utils-checkpoint-checkpoint-causes-simple-model-to-diverge/116271)
settles the same mechanism: a checkpointed block whose input does not require grad keeps its weights
fixed ("every gradient in cnn_block_1 stays fixed"); removing that checkpoint fixed training. Cause: part of the
model gets no gradient.

The fix (fixed=True): `use_reentrant=False`, the variant PyTorch's checkpoint documentation recommends: it
records the parameters used inside the block whether or not its inputs require grad (the forum thread
removed the checkpoint instead).

Validation (validate.py, seeds 0/1/2, 100 steps, B=32, final loss / ln(B)):
    fault 1.3235 / 1.1041 / 1.2782 (final 4.587 / 3.826 / 4.430 against ln 32 = 3.466; first 4.81 / 3.95 / 4.57)
    fixed 0.1042 / 0.1041 / 0.1031 (final 0.361 / 0.361 / 0.358)

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from flamingo_pytorch import PerceiverResampler
from torch import nn
from torch.utils.checkpoint import checkpoint

from common import DT, D, E, clip_loss, token_pairs

THREADS = ("huggingface/transformers#16276",
           "discuss.pytorch.org/t/use-of-torch-utils-checkpoint-checkpoint-causes-simple-model-to-diverge/116271")
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"

B = 32


class Adapter(nn.Module):
    def __init__(self):
        super().__init__()
        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)

    def forward(self, feats):
        latents = self.resampler(feats.unsqueeze(1))[:, 0]  # (B, T, D) -> (B, latents, D)
        return self.proj(latents.mean(1))


class CheckpointedAligner(nn.Module):
    def __init__(self, use_reentrant: bool):
        super().__init__()
        self.backbone_head = nn.Sequential(nn.Linear(D, D), nn.LayerNorm(D))  # pretrained, frozen
        self.adapter = Adapter()  # trainable
        self.text_encoder = nn.Sequential(nn.Linear(DT, 2 * E), nn.GELU(), nn.Linear(2 * E, E))  # frozen
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.use_reentrant = use_reentrant

    def forward(self, patch_tokens, text_features):
        feats = self.backbone_head(patch_tokens)
        img = checkpoint(self.adapter, feats, use_reentrant=self.use_reentrant)
        return F.normalize(img, dim=-1), F.normalize(self.text_encoder(text_features), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)

    model = CheckpointedAligner(use_reentrant=not fixed)
    model.backbone_head.requires_grad_(False)
    model.text_encoder.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
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
    session.close()
