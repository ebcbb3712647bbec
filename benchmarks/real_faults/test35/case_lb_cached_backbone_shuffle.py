"""Frozen-backbone outputs cached by batch position in the first epoch and reused in later epochs while the
DataLoader reshuffles: from the second epoch on, each batch's cached image tokens belong to other samples than the
captions the loader yields, so images and captions no longer match and a perceiver-pytorch aligner falls back to
chance.

What the user did: to avoid running the frozen vision backbone every epoch, the first pass stores its output for
each batch index (`cache[i] = backbone(x)`) and later epochs read `cache[i]` instead; the DataLoader was created
with shuffle=True. The thread's model does the same with the masks predicted in the previous epoch, stored per batch
and fed back as an extra input.

What went wrong and why: with shuffle=True every epoch draws a new order, so batch i of epoch 2 holds other samples
than batch i of epoch 1: "Shuffle set True in train_loader. In a new training epoch, the orders of training sample
will shuffle, not same as the last return_train_mask." The cached tokens are paired with the captions of other
images; after the first epoch (16 steps) the positive pairs carry no shared signal and the loss returns to ln(B).

The fix: the maintainer's, "set shuffle=False. The code would not work properly with the shuffle set as True" - the
loader keeps one order, so the cache lines up with the captions.

Validation (validate.py, 100 steps, B = 32, chance ln(B) = 3.466; final loss / ln(B)), 16 batches per epoch:
  fault: seed 0 1.001, seed 1 1.003, seed 2 1.003
  fixed: seed 0 0.067, seed 1 0.053, seed 2 0.053

Ground truth: misaligned_pairs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common import D, PerceiverAligner, clip_loss, token_pairs

THREADS = ("nikhilroxtomar/FANet#1",)
CAUSE = "misaligned_pairs"
FAMILY = "data pipeline"

B = 32
N = 512  # 16 batches per epoch
LR = 1e-3


def frozen_backbone(seed: int) -> nn.Module:
    torch.manual_seed(seed + 1000)
    net = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))
    return net.requires_grad_(False).eval()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    patches, texts = token_pairs(N, seed=seed)
    backbone = frozen_backbone(seed)
    torch.manual_seed(seed)
    model = PerceiverAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    loader = DataLoader(TensorDataset(patches, texts), batch_size=B, shuffle=not fixed, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    session = watch(model, optimizer, batch_size=B)
    cache: dict[int, torch.Tensor] = {}
    step = 0
    while step < steps:
        for i, (x, caption) in enumerate(loader):
            if i not in cache:
                with torch.no_grad():
                    cache[i] = backbone(x)
            tokens = cache[i]
            img, txt = model(tokens, caption)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            optimizer.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                            batch_size=B)
            optimizer.step()
            step += 1
            if step == steps:
                break
    session.close()
