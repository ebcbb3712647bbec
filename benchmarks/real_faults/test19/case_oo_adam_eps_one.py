"""Adam built with eps=1.0 (the TensorFlow "Inception" advice) on a model whose gradients are ~1e-3.

What the user did: trained a small CLIP (transformers `CLIPModel` from a tiny config, image-caption
pairs, the model's own contrastive loss) with `torch.optim.Adam(lr=1e-3, eps=1.0)`. The epsilon came from
a recipe that quotes the TensorFlow `AdamOptimizer` documentation ("the default value of 1e-8 for
epsilon might not be a good default in general ... for an Inception network on ImageNet a current good
choice is 1.0 or 0.1"), kept as a stability setting.

What went wrong: the loss drops from its initial value to about ln(B) in a few steps (the logit scale and
biases move) and then stays there. Adam's update is lr * m / (sqrt(v) + eps). Its point is that
sqrt(v) ~ |g| normalises the step to ~lr per weight; with eps = 1.0 and gradients of 1e-4..1e-2, the
denominator is eps, not sqrt(v), and the update is lr * g — plain SGD at lr 1e-3, hundreds of times
smaller than the Adam step the lr was chosen for. The weights hardly move in the run.

Threads: mlpnlp/mlpnlp-nmt#4 ("I suspect that the default eps value of the Adam optimizer (0.1) is too
large ... I found that the training does not work well when using eps=0.1"; merged: eps back to 1e-8);
dgriff777/rl_a3c_pytorch#29 (a large Adam eps questioned; the TensorFlow doc's 1.0 / 0.1 advice quoted as
where such values come from).

Fix (fixed=True): Adam's default eps (1e-8).

Validation (validate.py, 100 steps, B=32, ln(B)=3.4657; final = mean of the last 5 losses / ln(B)):
    seed 0: fault 0.9632, fixed 0.2119
    seed 1: fault 0.9114, fixed 0.1703
    seed 2: fault 0.8771, fixed 0.1693

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("mlpnlp/mlpnlp-nmt#4", "dgriff777/rl_a3c_pytorch#29")
CAUSE = "learning_rate_too_low"
FAMILY = "optimizer setup"


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    model = tiny_clip(seed, width=64)
    pixels, input_ids = image_caption_pairs(2048, seed)
    config = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1.0}  # eps: "1.0 or 0.1" per the TF docs
    if fixed:
        config["eps"] = 1e-8
    optimizer = torch.optim.Adam(model.parameters(), **config)
    g = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
        optimizer.zero_grad()
        out.loss.backward()
        session.observe(step, losses={"clip": out.loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B, inputs=pixels[idx])
        optimizer.step()
    session.close()
