"""CLIP trained with Adam whose epsilon was copied from the TF-slim training flags: `opt_epsilon = 1.0`.

What the user did (tensorflow/models#779; the same default is questioned in balancap/SSD-Tensorflow#385): the slim
`train_image_classifier.py` defines one `--opt_epsilon` flag for every optimizer, with default 1.0 (TF's AdamOptimizer
docstring says 1.0 or 0.1 can suit Inception on ImageNet), and passes it to Adam. The reporter trained with Adam
through that script: "My model weights were only marginally changed after 10.000 steps. Keeping it at default (1e-8
for Adam) fixed the problem." Here the same flag set is ported into a PyTorch script that trains a transformers
CLIPModel (tiny config, random weights) on image-caption pairs: `torch.optim.Adam(..., eps=FLAGS["opt_epsilon"])` with
`opt_epsilon = 1.0`.

Why it fails: Adam's step is `lr * m_hat / (sqrt(v_hat) + eps)`. With eps = 1e-8 the denominator is the gradient's own
RMS and every weight moves by about `lr` per step whatever its gradient's scale; with eps = 1.0 and gradients of order
1e-3..1e-1 (median 2e-2 on the first step here) the denominator is ~1, so the step is about `lr * g`: 50 times smaller
than intended for the median weight, up to 1000 times for the small-gradient ones. Adam degenerates into plain SGD at
lr 1e-3 on tiny gradients; the weights barely move and the loss sits at ln(B) for the whole run. Nothing diverges and
nothing is disconnected: the effective step size is simply far too small.

Fix (the thread's): keep Adam's own eps (1e-8); the learning rate and everything else unchanged.

Validation (benchmarks/real_faults/validate.py, 100 steps, B = 32, ln B = 3.4657, torch 2.13 CPU), final CLIP loss
(mean of the last 5 steps) / ln B per seed 0, 1, 2:
- fault (eps = 1.0): 0.9578, 0.9534, 0.9974;
- fixed (eps = 1e-8): 0.3018, 0.3098, 0.3043.

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("tensorflow/models#779", "balancap/SSD-Tensorflow#385")
CAUSE = "learning_rate_too_low"
FAMILY = "optimizer setup"

# the slim train_image_classifier.py optimizer flags, ported as they were
FLAGS = {
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "opt_epsilon": 1.0,
    "weight_decay": 0.0,
}


def configure_optimizer(params, flags):
    if flags["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=flags["learning_rate"], betas=(flags["adam_beta1"], flags["adam_beta2"]),
                                eps=flags["opt_epsilon"], weight_decay=flags["weight_decay"])
    if flags["optimizer"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=flags["learning_rate"], eps=flags["opt_epsilon"])
    return torch.optim.SGD(params, lr=flags["learning_rate"])


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    B = 32
    model = tiny_clip(seed)  # transformers CLIPModel, tiny config, random weights
    pixels, input_ids = image_caption_pairs(1024, seed=seed)

    flags = dict(FLAGS)
    if fixed:
        flags["opt_epsilon"] = 1e-8  # Adam's own default
    optimizer = configure_optimizer(model.parameters(), flags)

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        out = model(input_ids=input_ids[idx], pixel_values=pixels[idx])
        logits = out.logits_per_image
        loss = clip_loss(logits)

        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=logits)
        optimizer.step()
    session.close()
