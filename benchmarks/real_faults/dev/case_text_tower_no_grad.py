"""The text encoder *and its projection* run under `torch.no_grad()`: only the image side learns, and it
chases text embeddings that come out of a random, fixed projection.

Thread: edreisMD/ConVIRT-pytorch#7 ("Text encoder in 'no_grad' block?": the linear head after the text
embeddings was wrapped too; removing the no_grad "the loss go down quickly"); openai/CLIP#83 (how to
freeze a tower: `with torch.no_grad(): y = clip.image_encoder(x)`). Here: a transformers CLIPModel
whose `get_text_features` (text tower + text_projection) is called under no_grad.
Ground truth: no_gradient_path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("edreisMD/ConVIRT-pytorch#7", "openai/CLIP#83")
CAUSE = "no_gradient_path"
FAMILY = "frozen_parts"
BATCH = 64


def _features(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    pixels, ids = image_caption_pairs(seed=seed)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(ids), (BATCH,))
            img = F.normalize(_features(model.get_image_features(pixel_values=pixels[idx])), dim=-1)
            with torch.no_grad():  # BUG: meant to freeze the text encoder, also freezes text_projection
                txt = F.normalize(_features(model.get_text_features(input_ids=ids[idx])), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
