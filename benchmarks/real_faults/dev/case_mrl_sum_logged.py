"""An MRL loss summed over granularities reported as one loss: the loop logs the summed objective under
the name of the MRL component, so the dashboard's `loss_mrl` is neither the MRL loss nor comparable to
ln(B), and the CLIP term it contains is counted twice when someone adds the logged components.

Threads: modelscope/ms-swift#10137 ("log loss for each MRL dimension": the trainer reported only the
weighted sum over MRL dimensions), huggingface/sentence-transformers#2506 (MatryoshkaLoss / adaptive
layer losses summed into one reported number). Here: a flamingo-pytorch resampler with an MRL head
(prefixes 8/16/32), total = 0.25 * clip + mean MRL loss, the total logged as `mrl`.
Ground truth: logging_misstates_loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("modelscope/ms-swift#10137", "huggingface/sentence-transformers#2506")
CAUSE = "logging_misstates_loss"
FAMILY = "logging"
BATCH, DIMS, W_CLIP, W_MRL = 32, (8, 16, 32), 0.25, 1.0


def train(watch, steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(seed=seed)
    model = ResamplerAligner()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=BATCH) as w:
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (BATCH,))
            img, txt = model.encode_image(tokens[idx]), model.text(texts[idx])
            scale = model.logit_scale.exp()
            per_dim = [clip_loss(scale * F.normalize(img[:, :d], dim=-1) @ F.normalize(txt[:, :d], dim=-1).t())
                       for d in DIMS]
            img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
            logits = scale * img @ txt.t()
            loss_clip = clip_loss(logits)
            loss = W_CLIP * loss_clip + W_MRL * torch.stack(per_dim).mean()
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss_clip, "mrl": loss, "total": loss},  # BUG: the sum logged as mrl
                      weights={"clip": W_CLIP, "mrl": W_MRL}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=BATCH, inputs=tokens[idx], extras={"logit_scale": scale})
            opt.step()
