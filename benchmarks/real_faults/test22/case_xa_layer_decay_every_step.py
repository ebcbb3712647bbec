"""A layer-wise lr-decay wrapper that multiplies the lr on every step: after warmup the lr falls to zero.

What the user did: they fine-tuned a ViT-style CLIP (transformers CLIPModel from a tiny config) for image-text
alignment with the recipe of ViTPose_pytorch: AdamW (lr 1e-3 here, ViTPose uses 5e-4; weight decay 0.1),
gradient clipping at 1.0, a linear warmup from 0.001x through a `LambdaLR` stepped only for the warmup iterations, a
per-epoch `MultiStepLR`, and the repository's `LayerDecayOptimizer` wrapper for layer-wise lr decay
(rate 0.75). That wrapper's `step()` did `group['lr'] *= layerwise_decay_rate[i]` for each param group and
then called the inner optimizer's step.

What went wrong and why: the layer-decay factor is meant to be applied once, to set a lower lr for lower
layers; applied inside `step()` it compounds: every optimizer step multiplies the lr by 0.75 again.
During warmup the `LambdaLR` rewrites the lr from its base value each step, which hides the bug (each
warmup step just runs at 0.75x the warmup lr); the moment the warmup scheduler stops being stepped, the
lr decays geometrically, 0.75^k: below 1% of the base lr 16 steps after warmup, ~1e-13 by step 100.
The model only gets the warmup's worth of updates (about ten full-lr steps) and the loss stalls well
above where the run should end (0.8-0.9 ln(B)) while the printed lr goes to zero.

Thread: jaehyunnn/ViTPose_pytorch#20 ("The learning rate warms up to the preset value during training and
quickly becomes 0"); a user's workaround was layer_decay_rate=1.0, and the maintainer's fix (commit
0a2848e, "Fix LayerDecayOptimizer applying decay every step instead of once") moves the multiplication
into `__init__`, because multiplying every step "causes LR to exponentially decay to zero".

Fix (fixed=True): the wrapper applies the decay factor once, at construction (the maintainer's fix).

Validation (validate.py, 100 steps, B=32, final loss = mean of the last 5 steps, ln(32) = 3.4657):
- fault: final/ln(B) = 0.825, 0.882, 0.876 on seeds 0, 1, 2 (lr 1e-3 at step 20, 5.6e-5 at step 30,
  1.4e-13 at step 99; on seed 0 the loss falls from 4.32 to ~2.8 during warmup and the few steps after,
  then stalls);
- fixed: final/ln(B) = 0.337, 0.303, 0.341 (lr held at 7.5e-4 after warmup).

Ground truth: lr_schedule.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR, MultiStepLR

from common import image_caption_pairs, tiny_clip

THREADS = ("jaehyunnn/ViTPose_pytorch#20",)
CAUSE = "lr_schedule"
FAMILY = "schedules"

B = 32
LR = 1e-3
LAYER_DECAY_RATE = 0.75
NUM_LAYERS = 12
WARMUP_ITERS = 20
WARMUP_RATIO = 0.001
MILESTONES = [170, 200]  # epochs


class LayerDecayOptimizer:
    """ViTPose_pytorch's wrapper (models/optimizer.py before 0a2848e)."""

    def __init__(self, optimizer, layerwise_decay_rate):
        self.optimizer = optimizer
        self.layerwise_decay_rate = layerwise_decay_rate
        self.param_groups = optimizer.param_groups

    def step(self, *args, **kwargs):
        for i, group in enumerate(self.optimizer.param_groups):
            group['lr'] *= self.layerwise_decay_rate[i]
        self.optimizer.step(*args, **kwargs)

    def zero_grad(self, *args, **kwargs):
        self.optimizer.zero_grad(*args, **kwargs)


class LayerDecayOptimizerFixed(LayerDecayOptimizer):
    """The fix: the layer-wise rate is applied once, at initialisation."""

    def __init__(self, optimizer, layerwise_decay_rate):
        super().__init__(optimizer, layerwise_decay_rate)
        for i, group in enumerate(self.optimizer.param_groups):
            group['lr'] *= layerwise_decay_rate[i]

    def step(self, *args, **kwargs):
        self.optimizer.step(*args, **kwargs)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, input_ids = image_caption_pairs(1024, seed)
    model = tiny_clip(seed)
    model.train()

    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), weight_decay=0.1)
    lr_mult = [LAYER_DECAY_RATE] * NUM_LAYERS
    wrapper = LayerDecayOptimizerFixed if fixed else LayerDecayOptimizer
    layerwise_optimizer = wrapper(optimizer, lr_mult)
    scheduler = MultiStepLR(optimizer, MILESTONES, 0.1)
    warmup_scheduler = LambdaLR(
        optimizer, lr_lambda=lambda step: WARMUP_RATIO + (1.0 - WARMUP_RATIO) * step / WARMUP_ITERS)

    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = len(pixels) // B
    global_step = 0
    with watch(model, optimizer, batch_size=B) as session:
        for epoch in range((steps + steps_per_epoch - 1) // steps_per_epoch):
            order = torch.randperm(len(pixels), generator=g)
            for batch_idx in range(steps_per_epoch):
                if global_step >= steps:
                    break
                idx = order[batch_idx * B:(batch_idx + 1) * B]
                layerwise_optimizer.zero_grad()
                out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
                session.observe(global_step, losses={"clip": out.loss},
                                embeddings={"image": out.image_embeds, "text": out.text_embeds},
                                logits=out.logits_per_image, batch_size=B, inputs=pixels[idx])
                layerwise_optimizer.step()
                if global_step < WARMUP_ITERS:
                    warmup_scheduler.step()
                global_step += 1
            scheduler.step()
