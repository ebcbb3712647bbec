"""Cosine logits whose "normalisation" divides each embedding matrix by one global norm (no `dim`): the rows are
not unit vectors, the logits are ~B times too small, and the InfoNCE softmax stays almost uniform.

What the user did: a flamingo-pytorch PerceiverResampler over frozen patch tokens -> mean over latents -> linear
projection; text = linear projection of frozen text features; a learnable logit scale initialised at ln(1/0.07)
as in open_clip; the cosine similarity written by hand as `img / img.norm()` and `txt / txt.norm()` before the
matrix product; symmetric cross-entropy; AdamW.

What went wrong and why: `Tensor.norm()` without `dim` is the Frobenius norm of the whole (B, E) matrix, a single
number, so each row ends with norm ~1/sqrt(B) instead of 1 and every dot product is ~B times smaller than a
cosine. With B=64 the logits span a few hundredths even after the logit scale, the softmax over the batch is
nearly uniform, the loss stays close to ln(B) and the gradient that reaches the encoders is scaled down by the
same factor; the learnable scale moves by ~lr per step and cannot recover a factor of 64 in 100 steps. This is the
JaxGCRL report: its "cosine" energy normalised with `jnp.linalg.norm(x)` and no `axis`, which "collapses to a
single global Frobenius norm over the entire batch tensor", leaving logits "small enough that the InfoNCE softmax
is essentially uniform and the gradient signal vanishes"; `energy_fn="cosine"` did not train at all until the
norm was taken per sample over the feature axis (with a CLIP-style learned logit scale on top).

Threads: MichalBortkiewicz/JaxGCRL#64 (norm without axis = global norm; InfoNCE does not train; fix: per-sample
norm over the last axis plus a learned logit scale initialised at 1/0.07).

Fix: normalise each row over the feature axis, `F.normalize(x, dim=-1)` (= `x / x.norm(dim=-1, keepdim=True)`).

Validation (validate.py --half test33, B=64, ln(B)=4.1589, 100 steps, final = mean of the last 5 steps):
  fault: seed 0 3.9308 (ratio 0.9452), seed 1 3.9301 (0.9450), seed 2 3.9282 (0.9445)
  fixed: seed 0 0.1178 (0.0283), seed 1 0.1196 (0.0287), seed 2 0.1242 (0.0299)

Ground truth: not_normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("MichalBortkiewicz/JaxGCRL#64",)
CAUSE = "not_normalised"
FAMILY = "normalisation and temperature"


def cosine_logits(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, fixed: bool):
    if fixed:
        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    else:
        img, txt = img / img.norm(), txt / txt.norm()  # the bug: one norm for the whole batch matrix
    return img, txt, scale * img @ txt.t()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 64
    tokens, texts = token_pairs(2048, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=gen)
        raw_img = model.encode_image(tokens[idx])  # (B, E), before any normalisation
        raw_txt = model.text(texts[idx])
        img, txt, logits = cosine_logits(raw_img, raw_txt, model.logit_scale.exp(), fixed)
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
