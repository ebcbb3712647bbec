"""Every checkpoint save copies the EMA weights into the live model and never restores them: training keeps
restarting from the slow average, which has barely left the init.

What the user did: trains a transformers CLIPModel (tiny config, random weights) on image-caption pairs with
AdamW and keeps an exponential moving average of the weights (decay 0.999, the torch-ema / timm ModelEmaV2
recipe), updated after each optimizer step. A `save_checkpoint()` helper, called every 10 steps so a preempted
job loses little, does `ema.copy_to(model.parameters())` so the checkpoint on disk holds the EMA weights, then
`torch.save(model.state_dict(), ...)`, and returns to the training loop.

What went wrong and why: `copy_to` overwrote the live parameters the optimizer is training, and nothing put them
back, so after every save the run continues from the EMA average instead of from where AdamW had taken it. With
decay 0.999 the average moves 1% of the way towards the live weights per 10 steps: each save throws away ~99% of
the progress made since the last one, so the weights advance at ~(1-decay)*10/2 ~ 0.5% of the optimizer's rate.
The CLIP loss saw-tooths: it falls from its init level (3.9-4.6) to ~3.0-3.3 in the 10 steps after a save and
jumps back at the next one, for the whole run. waifu-diffusion#31 is this bug: its `save_checkpoint()` did
`ema_unet.copy_to(unet.parameters())` before saving the pipeline; "the original parameters are not restored,
meaning that training continues on the EMA parameters, which is undesired and means that training would be
impacted by the frequency of args.save_steps". Mapped to the closest cause: the net step the weights take is a
tiny fraction of the optimizer's, i.e. an effective learning rate too low for the weights to move.

The fix (fixed=True), the one merged in that PR: `ema.store(params)` before `copy_to`, `ema.restore(params)`
after saving, so the checkpoint holds the EMA weights and training continues from the live ones.

Validation (validate.py --half test30, stand-in watch, CPU, 1 thread; final = mean of the last 5 steps,
B = 32, ln B = 3.4657):
    seed 0: fault 3.1442 (0.907 ln B), fixed 1.0459 (0.302 ln B)
    seed 1: fault 2.9855 (0.861 ln B), fixed 1.0738 (0.310 ln B)
    seed 2: fault 3.0956 (0.893 ln B), fixed 1.0546 (0.304 ln B)
(the fault's last 5 steps are steps 6-10 of a save period, its lowest part; each save puts the loss back at
4.1-4.6)

Thread: harubaru/waifu-diffusion#31.

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import os
import tempfile

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("harubaru/waifu-diffusion#31",)
CAUSE = "learning_rate_too_low"
FAMILY = "checkpoint and resume"


class EMA:
    """Exponential moving average of parameters (adapted from torch-ema)."""

    def __init__(self, parameters, decay: float = 0.999):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in parameters]
        self.collected = None

    @torch.no_grad()
    def update(self, parameters):
        for s, p in zip(self.shadow, parameters):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)

    @torch.no_grad()
    def copy_to(self, parameters):
        for s, p in zip(self.shadow, parameters):
            p.copy_(s)

    def store(self, parameters):
        self.collected = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def restore(self, parameters):
        for c, p in zip(self.collected, parameters):
            p.copy_(c)
        self.collected = None


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B, save_every = 32, 10
    pixels, ids = image_caption_pairs(1024, seed=seed)
    model = tiny_clip(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    ema = EMA(model.parameters(), decay=0.999)

    with tempfile.TemporaryDirectory() as out_dir:
        def save_checkpoint(step):
            if fixed:
                ema.store(model.parameters())
            ema.copy_to(model.parameters())  # the checkpoint should hold the EMA weights
            torch.save(model.state_dict(), os.path.join(out_dir, f"clip_step{step}.pt"))
            if fixed:
                ema.restore(model.parameters())  # the fix: back to the weights being trained

        session = watch(model, optimizer, batch_size=B)
        g = torch.Generator().manual_seed(seed)
        model.train()
        for step in range(steps):
            idx = torch.randint(0, len(ids), (B,), generator=g)
            out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
            optimizer.zero_grad()
            out.loss.backward()
            session.observe(step, losses={"clip": out.loss},
                            embeddings={"image": out.image_embeds, "text": out.text_embeds},
                            logits=out.logits_per_image, batch_size=B, inputs=pixels[idx])
            optimizer.step()
            ema.update(model.parameters())
            if (step + 1) % save_every == 0:
                save_checkpoint(step + 1)
        session.close()
