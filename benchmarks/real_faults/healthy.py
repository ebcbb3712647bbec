"""Runs without a fault, to count false alarms: the same peer-library models as the fault cases plus two
more families, trained the way their documentation and open_clip's training loop do it (normalised
embeddings, logit scale ln(1/0.07) learned and clamped at 100, AdamW with weight decay 0.1, every tower
trained), over different seeds, batch sizes (16..128), widths, learning rates (3e-4..3e-3) and a few
learning-rate schedules (cosine, linear warm-up, warm-up then cosine).

Families (SPECS: 51 runs, 7 per family, two runs that observe before backward / after zero_grad, two in mixed
precision (fp16 autocast and a GradScaler, whose first step overflows and is skipped), one
resampler run whose text tower is locked: left out of the
optimizer with requires_grad=True, LiT's locked tower the way many scripts freeze; final 0.072 ln B; and four
resampler/perceiver runs on inputs that share one direction, a frozen backbone's anisotropic features: mean-pooled
input cosine 0.985-0.997, embeddings collapsed at 0.99+ from step 0, learning slowly but learning):
- resampler: flamingo-pytorch PerceiverResampler aligner (`common.ResamplerAligner`; width = latents)
- perceiver: perceiver-pytorch Perceiver aligner (`common.PerceiverAligner`; width = latents)
- clip: transformers CLIPModel from a tiny config (`common.tiny_clip`; width = hidden size of both towers)
- mrl: the resampler with an MRL head (prefixes 8/16/32), total = 0.25 * clip + mean MRL loss
- open_clip: open_clip's `CLIP` built from a tiny config (random weights, nothing downloaded), its own
  `ClipLoss`; open-clip-torch is installed with --no-deps, and when no torchvision loads beside the CPU
  torch the tests' stand-in (`tests/integrations/_torchvision_standin.py`) provides the few torchvision
  names open_clip imports (transforms, FrozenBatchNorm2d), only while `import open_clip` runs
- lightning: a `LightningModule` with two small towers (an MLP of `width` over the mean patch token, a
  linear text tower) and a learnable logit scale, fitted by `lightning.Trainer(max_steps=..., accelerator=
  "cpu", ...)`; the runner's watch reaches it through `watch.callback(**kw)`, which returns a Lightning
  callback (`diagnose.integrations.lightning.DiagnoseCallback` in run.py, a loss recorder in validate.py)
  or is absent (the no-watch baseline: no callback at all)

Validation WITHOUT the tool (`python benchmarks/real_faults/validate.py --healthy`: a stand-in watch that
records the losses given to observe, one torch thread): final loss = mean of the contrastive loss over the
last 5 steps (60 steps; 120 for clip and open_clip, see STEPS), divided by ln(batch); every run must end
below 0.5. Measured (final / ln B per family: min / median / max; the costliest run's CPU seconds, one
thread, the family's first run paying its imports):

    resampler  0.019 / 0.059 / 0.173   (1.6 s)
    perceiver  0.055 / 0.074 / 0.354   (1.3 s)
    clip       0.123 / 0.189 / 0.359   (3.4 s)   120 steps (at 60: 0.30-0.53)
    mrl        0.019 / 0.057 / 0.337   (1.0 s)
    open_clip  0.205 / 0.281 / 0.392   (4.9 s)   120 steps (at 60: 0.49-0.70)
    lightning  0.026 / 0.110 / 0.273   (1.1 s)

All 47 runs learned (and the two observing out of order, added later: resampler s54 0.033, perceiver s55 0.067; the
two in mixed precision, later still: resampler s56 0.030, perceiver s57 0.086, measured under the watch); the least-learning ones are the low-lr warm-up/cosine runs (mrl s27 0.337, perceiver
s23 0.289, lightning s46 0.273), the batch-16/24 ViT runs (open_clip s37 0.392, clip s14 0.359) and the
shared-direction perceiver runs (s51 0.354 at 60 steps, s53 0.232 at 120; the resampler's s50 0.112, s52 0.086).
For mrl the contrastive loss is the full-width CLIP term, not the weighted total.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common import (
    DT,
    E,
    IMG,
    SEQ,
    VOCAB,
    PerceiverAligner,
    ResamplerAligner,
    clip_loss,
    image_caption_pairs,
    tiny_clip,
    token_pairs,
)

MRL_DIMS = (8, 16, 32)  # nested prefixes of the 32-d embedding (Kusupati et al. 2022)
FAMILIES = ("resampler", "perceiver", "clip", "mrl", "open_clip", "lightning")


def _spec(model, seed, batch, **kw):
    return {"model": model, "seed": seed, "batch": batch, **kw}


# 51 runs, 7 per family, two observing out of the README's order, two in mixed precision, a resampler whose text tower is locked (left out of the optimizer) and four runs on inputs
# that share one direction (below); the first 20
# are the original runs (AdamW 1e-3, 60 steps, default widths)
SPECS = [_spec(m, s, b)
         for m, runs in (("resampler", ((1, 32), (2, 64), (3, 16), (4, 128), (5, 48))),
                         ("perceiver", ((6, 32), (7, 64), (8, 24), (9, 96), (10, 40))),
                         ("clip", ((11, 32), (12, 64), (13, 128), (14, 16), (15, 80))),
                         ("mrl", ((16, 32), (17, 64), (18, 128), (19, 20), (20, 56))))
         for s, b in runs] + [
    _spec("resampler", 21, 96, lr=5e-4, width=16, schedule="warmup"),
    _spec("resampler", 22, 24, lr=2e-3, width=4, schedule="cosine"),
    _spec("perceiver", 23, 48, lr=5e-4, width=16, schedule="cosine"),
    _spec("perceiver", 24, 112, lr=2e-3, width=4, schedule="warmup"),
    _spec("clip", 25, 48, lr=2e-3, width=48, schedule="warmup"),
    _spec("clip", 26, 64, lr=1e-3, width=64, schedule="warmup_cosine"),
    _spec("resampler", 29, 64, locked="text"),
    _spec("mrl", 27, 80, lr=5e-4, width=16, schedule="warmup_cosine"),
    _spec("mrl", 28, 16, lr=3e-3, width=4),
    _spec("open_clip", 31, 32),
    _spec("open_clip", 32, 64, lr=2e-3, width=48),
    _spec("open_clip", 33, 128, lr=2e-3, schedule="cosine"),
    _spec("open_clip", 34, 16, lr=1e-3, width=64),
    _spec("open_clip", 35, 48, lr=3e-3, schedule="warmup"),
    _spec("open_clip", 36, 96, lr=2e-3, width=32),
    _spec("open_clip", 37, 24, lr=3e-3, width=48, schedule="warmup_cosine"),
    _spec("lightning", 41, 32),
    _spec("lightning", 42, 64, lr=3e-4, width=128),
    _spec("lightning", 43, 128, lr=2e-3, width=32, schedule="cosine"),
    _spec("lightning", 44, 16, width=64),
    _spec("lightning", 45, 48, lr=3e-3, width=96, schedule="warmup"),
    _spec("lightning", 46, 96, lr=5e-4, width=64, schedule="warmup_cosine"),
    _spec("lightning", 47, 24, width=32),
    # inputs that share one direction (a frozen backbone's anisotropic features): the patch tokens plus one fixed
    # vector OFFSET times the mean norm of the content (mean-pooled input cosine 0.985 at 8, 0.996 at 16); the
    # embeddings start collapsed (cosine 0.992-0.999 at step 0) and still learn, slowly at 16 (hence 120 steps)
    _spec("resampler", 50, 32, offset=8.0),
    _spec("perceiver", 51, 64, offset=8.0),
    _spec("resampler", 52, 48, offset=16.0, steps=120),
    _spec("perceiver", 53, 32, offset=16.0, steps=120),
    # observe() where the loop's order puts it (blind cases' scripts do both): before backward, and after the step's
    # zero_grad (no gradient held at any observe)
    _spec("resampler", 54, 32, order="observe_first"),
    _spec("perceiver", 55, 48, order="zero_grad_first"),
    # mixed precision: fp16 autocast and a GradScaler, observed after unscale_ and clipping, or right after the
    # scaled backward (gradients 2^16 x the loss's)
    _spec("resampler", 56, 32, amp="unscaled"),
    _spec("perceiver", 57, 48, amp="scaled"),
]
# the CI subset (run.py --fast): one run per family but transformers' CLIP (120 steps, the costliest; the fast
# cases run it in case_text_tower_no_grad), the cheapest open_clip run
FAST = [next(s for s in SPECS if s["seed"] == seed) for seed in (1, 6, 16, 34, 41)]
# optimizer steps per family: the two ViT-tower CLIPs need 120 to end clearly below ln(B) (at 60 they end at
# 0.30-0.53 ln B (clip) and 0.49-0.70 ln B (open_clip)); the others learn in 60
STEPS = {"clip": 120, "open_clip": 120}

WARMUP = 10  # steps of linear warm-up for "warmup" and "warmup_cosine"


def lr_factor(schedule: str | None, steps: int):
    """The multiplier of the base learning rate at step t (torch's LambdaLR convention), or None."""
    if schedule is None:
        return None
    if schedule == "cosine":
        return lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))
    if schedule == "warmup":
        return lambda t: min(1.0, (t + 1) / WARMUP)
    if schedule == "warmup_cosine":
        return lambda t: (t + 1) / WARMUP if t < WARMUP else \
            0.5 * (1 + math.cos(math.pi * (t - WARMUP) / max(1, steps - WARMUP)))
    raise ValueError(f"unknown schedule {schedule!r}: cosine, warmup or warmup_cosine")


def _scheduler(opt, schedule, steps):
    f = lr_factor(schedule, steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, f) if f else None


def mrl_losses(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> list[torch.Tensor]:
    """One contrastive loss per nested prefix: truncate, re-normalise, score."""
    return [clip_loss(scale * F.normalize(img[:, :d], dim=-1) @ F.normalize(txt[:, :d], dim=-1).t()) for d in MRL_DIMS]


def train(watch, model: str = "resampler", seed: int = 0, batch: int = 32, steps: int | None = None, lr: float = 1e-3,
          width: int | None = None, schedule: str | None = None, locked: str | None = None,
          offset: float | None = None, order: str = "backward_observe_step", amp: str | None = None) -> None:
    torch.manual_seed(seed)
    steps = steps or STEPS.get(model, 60)
    if model == "clip":
        return _train_clip(watch, seed, batch, steps, lr, width or 32, schedule)
    if model == "open_clip":
        return _train_open_clip(watch, seed, batch, steps, lr, width or 32, schedule)
    if model == "lightning":
        return _train_lightning(watch, seed, batch, steps, lr, width or 64, schedule)
    tokens, texts = token_pairs(seed=seed)
    if offset:
        shared = torch.randn(tokens.shape[-1], generator=torch.Generator().manual_seed(seed + 1000))
        tokens = tokens + shared / shared.norm() * offset * tokens.mean(1).norm(dim=-1).mean()
    net = PerceiverAligner(latents=width or 8) if model == "perceiver" else ResamplerAligner(latents=width or 8)
    # `locked`: a tower kept at its initial weights by leaving it out of the optimizer (LiT's locked tower, the
    # way many scripts freeze: its parameters keep requires_grad=True and get gradients that nothing applies)
    opt = torch.optim.AdamW([p for n, p in net.named_parameters() if not (locked and n.startswith(locked + "."))],
                            lr=lr, weight_decay=0.1)
    sched = _scheduler(opt, schedule, steps)
    # `amp`: fp16 autocast and a GradScaler (its first steps overflow and are skipped by design); "unscaled":
    # observe after scaler.unscale_ (the AMP recipe's place for clipping), "scaled": right after the backward
    scaler = torch.amp.GradScaler("cpu") if amp else None
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
                with torch.autocast("cpu", dtype=torch.float16, enabled=scaler is not None):
                    img, txt = net(tokens[idx], texts[idx])
                    logits = net.logit_scale.exp() * img @ txt.t()
                loss = clip_loss(logits.float())
                losses, weights = {"clip": loss}, None
            seen = dict(losses=losses, weights=weights, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=batch, inputs=tokens[idx], extras={"logit_scale": net.logit_scale.exp()})
            if order == "observe_first":  # the step's gradients not computed yet: the watch reads the last step's
                w.observe(step, **seen)
            opt.zero_grad()
            if scaler is not None:
                scaler.scale(loss).backward()
                if amp == "unscaled":
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            else:
                loss.backward()
            if order == "backward_observe_step":  # the README's order
                w.observe(step, **seen)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if order == "zero_grad_first":  # cleared right after the step: no gradient is held at observe
                opt.zero_grad()
                w.observe(step, **seen)
            if sched:
                sched.step()
            with torch.no_grad():
                net.logit_scale.clamp_(0, 4.6052)  # open_clip: exp(scale) <= 100


def _train_clip(watch, seed: int, batch: int, steps: int, lr: float, width: int, schedule) -> None:
    pixels, ids = image_caption_pairs(seed=seed)
    model = tiny_clip(seed, width=width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    sched = _scheduler(opt, schedule, steps)
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
            if sched:
                sched.step()


# -- open_clip ---------------------------------------------------------------------------------------
def import_open_clip():
    """`import open_clip` (open-clip-torch installed with --no-deps), with the tests' torchvision stand-in
    when no real torchvision loads; one line naming the install when open_clip is missing."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.integrations._torchvision_standin import import_open_clip as standin_import

    mod = standin_import()
    if mod is None:
        raise SystemExit("open_clip is missing: pip install --no-deps -r requirements/peers-nodeps.txt")
    return mod


def tiny_open_clip(seed: int = 0, width: int = 32):
    """open_clip's `CLIP` from a tiny config over `common.image_caption_pairs` (EOS is the highest token id:
    open_clip's text tower pools at the argmax); random weights, nothing downloaded."""
    open_clip = import_open_clip()
    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=E, output_dict=True,
        vision_cfg={"image_size": IMG, "patch_size": 4, "width": width, "head_width": 16, "layers": 2},
        text_cfg={"context_length": SEQ, "vocab_size": VOCAB, "width": width, "heads": 2, "layers": 2})


def _train_open_clip(watch, seed: int, batch: int, steps: int, lr: float, width: int, schedule) -> None:
    open_clip = import_open_clip()
    pixels, ids = image_caption_pairs(seed=seed)
    model = tiny_open_clip(seed, width)
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    sched = _scheduler(opt, schedule, steps)
    with watch(model, opt, batch_size=batch) as w:
        words = torch.nn.functional.one_hot(ids[:256], VOCAB).sum(1).float()
        w.data_signal(pixels[:256].flatten(1), words)
        for step in range(steps):
            idx = torch.randint(0, len(ids), (batch,))
            o = model(pixels[idx], ids[idx])
            img, txt, scale = o["image_features"], o["text_features"], o["logit_scale"]
            loss = loss_fn(img, txt, scale)
            logits, _ = loss_fn.get_logits(img, txt, scale)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=batch, extras={"logit_scale": scale})
            opt.step()
            if sched:
                sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))  # open_clip's training loop


# -- Lightning ---------------------------------------------------------------------------------------
def two_tower_module(width: int = 64, lr: float = 1e-3, schedule: str | None = None, steps: int = 60):
    """A LightningModule: image tower MLP(mean patch token), text tower linear, learnable logit scale;
    `training_step` returns what `DiagnoseCallback` reads (loss, embeddings, logits, logit scale)."""
    import lightning as L

    class TwoTower(L.LightningModule):
        def __init__(self):
            super().__init__()
            d = token_pairs(n=1)[0].shape[-1]
            self.image = nn.Sequential(nn.Linear(d, width), nn.GELU(), nn.Linear(width, E))
            self.text = nn.Linear(DT, E)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

        def training_step(self, batch, batch_idx):
            tokens, texts = batch
            img = F.normalize(self.image(tokens.mean(1)), dim=-1)
            txt = F.normalize(self.text(texts), dim=-1)
            logits = self.logit_scale.exp() * img @ txt.T
            loss = clip_loss(logits)
            return {"loss": loss, "image_embeds": img, "text_embeds": txt, "logits": logits,
                    "logit_scale": self.logit_scale.exp()}

        def on_train_batch_end(self, outputs, batch, batch_idx):
            with torch.no_grad():
                self.logit_scale.clamp_(0, math.log(100))

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=0.1)
            f = lr_factor(schedule, steps)
            if f is None:
                return opt
            return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, f),
                                                       "interval": "step"}}

    return TwoTower()


def _train_lightning(watch, seed: int, batch: int, steps: int, lr: float, width: int, schedule) -> None:
    """Fit with `lightning.Trainer`; `watch.callback(**kw)` (when the watch has one) is the callback."""
    import logging

    import lightning as L

    tokens, texts = token_pairs(seed=seed)
    torch.manual_seed(seed)
    module = two_tower_module(width, lr, schedule, steps)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, texts), batch_size=batch,
                                         shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    make = getattr(watch, "callback", None)
    callbacks = [make()] if make is not None else []
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=callbacks)
    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "GPU available" lines; stdout is the runner's JSON
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.fit(module, loader)
    finally:
        quiet.setLevel(level)
