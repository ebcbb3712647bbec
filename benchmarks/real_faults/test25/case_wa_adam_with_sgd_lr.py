"""Optimizer swapped from SGD to Adam, the SGD recipe's learning rate kept (transformers CLIP, tiny config).

What the user did: their training script builds its optimizer from per-group parameter lists
(`get_params`: one group for the towers, one for the projection heads and the temperature, each at
`lr_decay * lr`) and hands them to `torch.optim.SGD(params, lr=args.lr, momentum=0.9,
weight_decay=5e-4, nesterov=True)` with the repository's default `--lr 1e-2`. They replaced the SGD
call by `torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)` and kept everything
else, so Adam runs at 1e-2 (jindongwang/transferlearning#448: with SGD the first epoch reaches loss
0.85 / accuracy 0.71, with Adam loss 4.02 / accuracy 0.149, i.e. chance on 7 classes; "I also have
a similar problem").

What went wrong and why: an SGD learning rate is a multiplier on the raw gradient, an Adam learning
rate is (nearly) the size of every parameter's step, whatever the gradient. At 1e-2 Adam moves every
weight by about 1e-2 per step while the small transformer towers are initialised at std 0.02-0.13:
measured on seed 0, the median weight matrix changes by 16 % of its norm on the first step and by
11 % down to 2.6 % on each of the next nine (at 1e-3: 1.6 %, then under 1 %). The layers are
rewritten faster than the contrastive gradient can shape them, the embeddings stop carrying the pair
structure and the symmetric InfoNCE stays near ln(B). The learning rate that was right for the
optimizer it was tuned for is far too high for the one it now drives; the answer in ijkguo/mx-rcnn#88
to the same swap (SGD -> Adam at the SGD learning rate, training loss very large from the start):
"learning step size is too big".

Threads: jindongwang/transferlearning#448 (the swap and the chance-level result),
ijkguo/mx-rcnn#88 (same swap, the diagnosis given there: step size too big).

Fix: give Adam an Adam-sized learning rate (its default 1e-3) instead of the SGD recipe's 1e-2.

Validation (validate.py --half test25, 100 steps, B = 32, ln B = 3.4657; final = mean of the last 5
steps): fault final / ln B = 0.836, 0.928, 0.902 (seeds 0, 1, 2; final 2.896, 3.215, 3.127); fixed
(Adam lr 1e-3) 0.142, 0.134, 0.200 (final 0.491, 0.466, 0.691).

Ground truth: learning_rate_too_high.
"""

from __future__ import annotations

import torch

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("jindongwang/transferlearning#448", "ijkguo/mx-rcnn#88")
CAUSE = "learning_rate_too_high"
FAMILY = "optimizer setup"

B = 32
LR = 1e-2  # the script's --lr default, tuned for its SGD(momentum=0.9, nesterov=True)
WEIGHT_DECAY = 5e-4
LR_DECAY_TOWERS, LR_DECAY_HEADS = 1.0, 1.0


def get_params(model, lr):
    """Per-group learning rates, the way the script builds them for its optimizer."""
    towers = list(model.vision_model.parameters()) + list(model.text_model.parameters())
    heads = (list(model.visual_projection.parameters()) + list(model.text_projection.parameters())
             + [model.logit_scale])
    return [{"params": towers, "lr": LR_DECAY_TOWERS * lr},
            {"params": heads, "lr": LR_DECAY_HEADS * lr}]


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    model = tiny_clip(seed, width=64)
    pixels, captions = image_caption_pairs(1024, seed)

    lr = 1e-3 if fixed else LR  # fix: an Adam-sized learning rate
    # was: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=WEIGHT_DECAY, nesterov=True)
    optimizer = torch.optim.Adam(get_params(model, lr), lr=lr, weight_decay=WEIGHT_DECAY)

    g = torch.Generator().manual_seed(seed)
    model.train()
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        out = model(input_ids=captions[idx], pixel_values=pixels[idx])
        logits = out.logits_per_image
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=logits, batch_size=B)
        optimizer.step()
    session.close()
