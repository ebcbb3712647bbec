"""Image-text alignment trained with HobbitLong's SupConLoss (image and caption as the two "views"), fed
raw projector outputs instead of L2-normalised ones: the loss turns NaN.

What the user did: a frozen-backbone alignment model (flamingo-pytorch PerceiverResampler over the patch
tokens -> mean over latents -> linear projection; a linear text projection) trained with the SupConLoss of
SupContrast's `losses.py`, copied into the project as it stood in 2022 (no epsilon in the log). The image
embedding and the caption embedding of a pair are stacked as the two views, `features = [bsz, 2, dim]`,
labels=None (SimCLR mode: each image's positive is its caption and vice versa). The projector outputs go in
as they come out of `nn.Linear`; the README's "better be L2 normalized in f_dim dimension" was skipped.

What went wrong, and why: SupConLoss divides the raw dot products by temperature 0.07, subtracts each row's
maximum, exponentiates, masks out the self-contrast column and takes `log(exp_logits.sum(1))`. With
unnormalised features the row maximum is the anchor's own squared norm |x_i|^2/0.07, far above every
similarity to another sample; after the subtraction all the remaining logits sit hundreds below zero, exp()
underflows to exactly 0 in float32, the masked row sum is 0, log(0) = -inf, and `mask * log_prob` multiplies
0 by inf: NaN. Here the caption embeddings leave `nn.Linear` with norm ~9 (the images ~1.5): on the very
first batch 17 of the 128 anchor rows underflow (seed 0), the loss is NaN and the first optimizer step makes
every weight NaN. The threads' readers settled on the cause, features not normalised: the logits were close
to -9000 before the NaN (SupContrast#104, features not normalised); "may it's because there is not
normalization" (SupContrast#100, closed by its reporter); the mechanism (row max far above the rest, the
masked exp row all 0, log(0)) is spelled out in TS-TCC#25, which uses the same loss.

Threads: HobbitLong/SupContrast#104, HobbitLong/SupContrast#100, emadeldeen24/TS-TCC#25.

Fix (fixed=True): L2-normalise both embeddings before they enter the loss (`F.normalize(..., dim=-1)`), as
SupContrast's own networks do: every similarity is a cosine in [-1, 1], no row can underflow, and the
alignment learns.

Validation (validate.py, seeds 0/1/2, 100 steps, B=64, ln(64)=4.1589; final loss, ratio = final/ln B):
  fault: non-finite on every seed (first NaN at step 0 / 0 / 0)
  fixed: 0.2056 / 0.2642 / 0.2308 (ratio 0.0494 / 0.0635 / 0.0555)

Ground truth: not_normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from common import DT, D, E, token_pairs
from torch import nn

THREADS = ("HobbitLong/SupContrast#104", "HobbitLong/SupContrast#100", "emadeldeen24/TS-TCC#25")
CAUSE = "not_normalised"
FAMILY = "normalisation and temperature"

B = 64


class SupConLoss(nn.Module):
    """SupContrast's losses.py (2022 version, copied into the user's project): SimCLR mode when labels=None."""

    def __init__(self, temperature=0.07, contrast_mode="all", base_temperature=0.07):
        super().__init__()
        self.temperature = temperature
        self.contrast_mode = contrast_mode
        self.base_temperature = base_temperature

    def forward(self, features, labels=None, mask=None):
        batch_size = features.shape[0]
        if labels is None and mask is None:
            mask = torch.eye(batch_size, dtype=torch.float32)
        elif labels is not None:
            labels = labels.contiguous().view(-1, 1)
            mask = torch.eq(labels, labels.T).float()
        else:
            mask = mask.float()

        contrast_count = features.shape[1]
        contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
        anchor_feature, anchor_count = contrast_feature, contrast_count

        anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, contrast_feature.T), self.temperature)
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)  # for numerical stability
        logits = anchor_dot_contrast - logits_max.detach()

        mask = mask.repeat(anchor_count, contrast_count)
        logits_mask = torch.scatter(torch.ones_like(mask), 1,
                                    torch.arange(batch_size * anchor_count).view(-1, 1), 0)
        mask = mask * logits_mask

        exp_logits = torch.exp(logits) * logits_mask
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
        mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)

        loss = -(self.temperature / self.base_temperature) * mean_log_prob_pos
        return loss.view(anchor_count, batch_size).mean()


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        from flamingo_pytorch import PerceiverResampler

        self.resampler = PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]  # (B, T, D) -> (B, latents, D)
        return self.proj(lat.mean(1)), self.text(texts)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = Aligner()
    criterion = SupConLoss(temperature=0.07)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    per_epoch = len(tokens) // B
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(len(tokens), generator=g)
        idx = order[(step % per_epoch) * B:(step % per_epoch + 1) * B]
        img, txt = model(tokens[idx], texts[idx])
        if fixed:  # the fix: unit vectors into the loss
            img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
        features = torch.stack([img, txt], dim=1)  # [bsz, n_views=2, dim]: the image and its caption
        loss = criterion(features)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"contrastive": loss}, embeddings={"image": img, "text": txt}, batch_size=B)
        optimizer.step()
    session.close()
