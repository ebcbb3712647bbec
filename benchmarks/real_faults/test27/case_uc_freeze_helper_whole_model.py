"""A "freeze the pretrained base" helper handed the whole model: every layer is frozen, the new ones too.

What the user did: locked-image tuning of a CLIP-style model (a transformers CLIPModel built from a tiny
config; its random vision tower stands in for the pretrained image encoder). The plan: freeze the image
tower, train the text tower, both projections and the temperature. They wrote a helper that walks a
module's layers and switches each one off, `for layer in base.children(): layer.requires_grad_(False)`
(the PyTorch twin of Keras' `for layer in base_model.layers: layer.trainable = False`), and called it
with the model, `freeze_base(model)`, where the base was `model.vision_model`. The optimizer takes the
parameters that still require gradients.

What went wrong and why: the children of the CLIPModel are the text tower, the vision tower and the two
projections, so the helper froze every layer of the model, the new trainable parts included. Only
`logit_scale`, a bare parameter and not a child module, was left trainable, so `backward()` still runs and
the loop looks normal, but no gradient reaches any weight: both towers and both projections keep their
initial values and the pairs are never matched. The temperature is the one thing that moves. The loss
stays above ln(B) for the whole run.

Threads: harvitronix/five-video-classification-methods#19 ("none of layers will be trained because all
layers of model have been set trainable = False": `get_top_layer_model(model)` was called with the full
model where the base model was meant, so the freeze loop also froze the new top layers; the maintainer:
"My goodness you're right!"), fixed in harvitronix/five-video-classification-methods#26 ("Fixes bug where
our fine-tuning layers were frozen", then "Dont freeze the new dense layers").

Fix (fixed=True): hand the helper the base it was written for, `freeze_base(model.vision_model)`: the
image tower is frozen, the text tower and the projections train.

Validation (validate.py, seeds 0/1/2, 100 steps, B=64, final = mean of the last 5 losses, ln(64)=4.159):
fault final/ln(B) = 1.201 / 1.063 / 1.087 (losses 4.996 / 4.421 / 4.520: the random towers' cosines at
the initial scale 14.3, easing only as the scale shrinks); fixed 0.352 / 0.253 / 0.392 (1.465 / 1.054 /
1.629). About 2 s a run on one CPU thread.

Ground truth: no_gradient_path.
"""

from __future__ import annotations

import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("harvitronix/five-video-classification-methods#19", "harvitronix/five-video-classification-methods#26")
CAUSE = "no_gradient_path"
FAMILY = "frozen parts"

B = 64


def freeze_base(base: torch.nn.Module) -> None:
    """Freeze the pretrained layers, train only what sits on top of them."""
    for layer in base.children():
        layer.requires_grad_(False)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    pixels, captions = image_caption_pairs(n=1024, seed=seed)
    model = tiny_clip(seed=seed)
    freeze_base(model.vision_model if fixed else model)  # the user's call: freeze_base(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        out = model(input_ids=captions[idx], pixel_values=pixels[idx], return_loss=True)
        loss = out.loss
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B, inputs=pixels[idx])
        optimizer.step()
    session.close()
