"""Embeddings "L2-normalised" with `x / torch.norm(x)`: one norm for the whole batch matrix, not one per row,
so every embedding is ~1/sqrt(B) long and the cosine logits are squeezed towards zero.

What the user did: a frozen-backbone alignment model (`common.ResamplerAligner`: patch tokens ->
flamingo-pytorch PerceiverResampler -> mean over latents -> projection; pooled text features -> projection)
trained with the CLIP loss and the usual learnable logit scale (exp(2.659) = 14.3). The user normalises
the two embedding batches themselves before the dot product, with the line of
HarryVolek/PyTorch_Speaker_Verification's embedder (`x = x / torch.norm(x)`), meaning "unit-length
embeddings" as in the GE2E paper's eq. (4).

What went wrong and why: `torch.norm(x)` without `dim` is the Frobenius norm of the whole (B, E) matrix, a
scalar. Dividing by it puts the *batch* on the unit sphere, not each embedding: each row ends with norm
~1/sqrt(B) (sum of squared row norms = 1), so every image-text dot product is at most ~1/B in size instead
of a cosine in [-1, 1]. With B = 64 the logits stay within about +-0.2 even after scaling by 14.3, the
softmax over the 64 candidates stays nearly flat whatever the encoders learn, and the loss stays near
ln(64). The
learnable logit scale would have to grow by ~B (its log by ~4) to compensate; at lr 1e-3 it moves ~0.1 in
100 steps. The reporters of PyTorch_Speaker_Verification#16 and #27 point at that line ("torch.norm will give
a scalar ... x should be normalized by each embedding"; "the code as written calculates the norm over the
entire matrix"), and the maintainer fixed it in #27.

Fix (the thread's): normalise each embedding, `x / torch.norm(x, dim=1).unsqueeze(1)`
(`F.normalize(x, dim=-1)`).

Validation (validate.py, 100 steps, B = 64, ln B = 4.1589; final = mean of the last 5 steps):
fault final / ln(B) = 0.9452 / 0.9450 / 0.9445 on seeds 0 / 1 / 2; fixed 0.0283 / 0.0287 / 0.0299.

Ground truth: not_normalised.
"""

from __future__ import annotations

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("HarryVolek/PyTorch_Speaker_Verification#27", "HarryVolek/PyTorch_Speaker_Verification#16")
CAUSE = "not_normalised"
FAMILY = "normalisation and temperature"

B = 64


def l2_norm(x: torch.Tensor, fixed: bool) -> torch.Tensor:
    if fixed:
        return x / torch.norm(x, dim=1).unsqueeze(1)
    return x / torch.norm(x)  # "L2 normalisation" of the embeddings


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(n=2048, seed=seed)
    model = ResamplerAligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img = l2_norm(model.encode_image(tokens[idx]), fixed)
        txt = l2_norm(model.text(texts[idx]), fixed)
        logit_scale = model.logit_scale.exp()
        logits = logit_scale * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
