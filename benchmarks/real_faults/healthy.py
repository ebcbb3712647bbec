"""Runs without a fault, to count false alarms: the same peer-library models as the fault cases, trained
the way their documentation and open_clip's training loop do it (normalised embeddings, logit scale
ln(1/0.07) learned, AdamW 1e-3, every tower trained), over different seeds and batch sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import VOCAB, PerceiverAligner, ResamplerAligner, clip_loss, image_caption_pairs, tiny_clip, token_pairs

MRL_DIMS = (8, 16, 32)  # nested prefixes of the 32-d embedding (Kusupati et al. 2022)

# 20 runs: 5 per model family, each with its own seed and batch size
SPECS = [{"model": m, "seed": s, "batch": b}
         for m, runs in (("resampler", ((1, 32), (2, 64), (3, 16), (4, 128), (5, 48))),
                         ("perceiver", ((6, 32), (7, 64), (8, 24), (9, 96), (10, 40))),
                         ("clip", ((11, 32), (12, 64), (13, 128), (14, 16), (15, 80))),
                         ("mrl", ((16, 32), (17, 64), (18, 128), (19, 20), (20, 56))))
         for s, b in runs]


def mrl_losses(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> list[torch.Tensor]:
    """One contrastive loss per nested prefix: truncate, re-normalise, score."""
    return [clip_loss(scale * F.normalize(img[:, :d], dim=-1) @ F.normalize(txt[:, :d], dim=-1).t()) for d in MRL_DIMS]


def train(watch, model: str = "resampler", seed: int = 0, batch: int = 32, steps: int = 60) -> None:
    torch.manual_seed(seed)
    if model == "clip":
        return _train_clip(watch, seed, batch, steps)
    tokens, texts = token_pairs(seed=seed)
    net = PerceiverAligner() if model == "perceiver" else ResamplerAligner()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(net, opt, batch_size=batch) as w:
        w.data_signal(tokens[:256], texts[:256])  # the README's data check (as in case_cached_features_misaligned)
        for step in range(steps):
            idx = torch.randint(0, len(tokens), (batch,))
            if model == "mrl":
                img = net.proj(net.resampler(tokens[idx].unsqueeze(1))[:, 0].mean(1))
                txt = net.text(texts[idx])
                parts = mrl_losses(img, txt, net.logit_scale.exp())
                loss_clip, loss_mrl = parts[-1], torch.stack(parts).mean()
                loss = 0.25 * loss_clip + loss_mrl
                img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
                logits = net.logit_scale.exp() * img @ txt.t()
                losses, weights = {"clip": loss_clip, "mrl": loss_mrl, "total": loss}, {"clip": 0.25, "mrl": 1.0}
            else:
                img, txt = net(tokens[idx], texts[idx])
                logits = net.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits)
                losses, weights = {"clip": loss}, None
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses=losses, weights=weights, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=batch, inputs=tokens[idx], extras={"logit_scale": net.logit_scale.exp()})
            opt.step()
            with torch.no_grad():
                net.logit_scale.clamp_(0, 4.6052)  # open_clip: exp(scale) <= 100


def _train_clip(watch, seed: int, batch: int, steps: int) -> None:
    pixels, ids = image_caption_pairs(seed=seed)
    model = tiny_clip(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with watch(model, opt, batch_size=batch) as w:
        words = torch.nn.functional.one_hot(ids[:256], VOCAB).sum(1).float()  # bag of words as text features
        w.data_signal(pixels[:256].flatten(1), words)
        for step in range(steps):
            idx = torch.randint(0, len(ids), (batch,))
            out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
            opt.zero_grad()
            out.loss.backward()
            w.observe(step, losses={"clip": out.loss}, embeddings={"image": out.image_embeds, "text": out.text_embeds},
                      logits=out.logits_per_image, batch_size=batch, extras={"logit_scale": model.logit_scale.exp()})
            opt.step()
