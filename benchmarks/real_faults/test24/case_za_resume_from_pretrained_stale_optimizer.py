"""Resuming re-creates the model with `from_pretrained` after the custom optimizer was built: nothing trains.

What the user did: fine-tuned a transformers CLIPModel (tiny config, random weights) on image-caption pairs with
their own AdamW and warm-up scheduler. The job was pre-empted after 20 steps; the checkpoint holds
`save_pretrained` weights plus the optimizer and scheduler state dicts. The resumed job runs the same script: it
builds the model and the custom optimizer/scheduler (what it hands to the Trainer as `optimizers=(opt, sched)`),
then resumes the way `Trainer.train` did for a `PreTrainedModel` before #11318 (the reporter ran transformers
4.3.2): `model = model.from_pretrained(checkpoint)` ("Loading model from ...", `model_reloaded = True`), then
`optimizer.load_state_dict(...)` and `scheduler.load_state_dict(...)`. The loss, lr and steps all look normal.

What went wrong and why: `from_pretrained` returns a new module with new Parameter tensors. The optimizer was
built on the parameters of the model object that existed before, and `load_state_dict` only restores state into
those same old tensors. From the resume on, `loss.backward()` fills the gradients of the new model, which is in
no param group, while `optimizer.step()` updates the old, unused tensors (their `.grad` is None, so it does
nothing at all). The network does not change for the rest of the run: the CLIP loss stays where the pre-empted job
left it, near ln(B), although the optimizer's lr, the schedule and the step count are exactly right.

Threads: huggingface/transformers#12795 ("The network does not change if I resume training from checkpoint while
also providing custom optimizer and scheduler", transformers 4.3.2), huggingface/transformers#11318 (the fix
"Load checkpoint without re-creating the model": "the current loading messes up the model a user passed").

Fix (fixed=True): load the checkpoint into the existing model (`model.load_state_dict(...)` of the saved weights,
what #11318 does) so the optimizer's tensors are the model's tensors; everything else unchanged.

Validation (validate.py --half test24, seeds 0/1/2, 20 + 80 steps, B=32, final CLIP loss / ln(B)):
fault 0.963 / 0.904 / 0.932 (final 3.34 / 3.13 / 3.23 vs ln 32 = 3.466; at the resume, steps 15-19: 0.973 / 0.934 /
0.953), fixed 0.302 / 0.308 / 0.240.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import os
import tempfile

import torch
from common import image_caption_pairs, tiny_clip

THREADS = ("huggingface/transformers#12795", "huggingface/transformers#11318")
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint and resume"

B = 32
LR = 5e-4


def make_optimizer(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10))
    return optimizer, scheduler


def run_steps(watch, model, optimizer, scheduler, pixels, ids, order, first, last):
    model.train()
    session = watch(model, optimizer, batch_size=B)
    for step in range(first, last):
        idx = order[step * B:(step + 1) * B]
        out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True)
        optimizer.zero_grad()
        out.loss.backward()
        session.observe(step, losses={"clip": out.loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B, inputs=pixels[idx])
        optimizer.step()
        scheduler.step()
    session.close()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    pixels, ids = image_caption_pairs(512, seed)
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(ids), generator=g) for _ in range(steps * B // len(ids) + 1)])
    preempted_at = steps // 5

    with tempfile.TemporaryDirectory() as ckpt:
        # first job: trains until it is pre-empted, checkpointing as it goes
        model = tiny_clip(seed)
        optimizer, scheduler = make_optimizer(model)
        run_steps(watch, model, optimizer, scheduler, pixels, ids, order, 0, preempted_at)
        model.save_pretrained(ckpt)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   os.path.join(ckpt, "training_state.pt"))

        # resumed job: same script, built from the config, then resumed from the checkpoint
        model = tiny_clip(seed + 1)
        optimizer, scheduler = make_optimizer(model)
        if fixed:
            reloaded = model.from_pretrained(ckpt, attn_implementation="eager")
            model.load_state_dict(reloaded.state_dict())
        else:
            model = model.from_pretrained(ckpt, attn_implementation="eager")
        state = torch.load(os.path.join(ckpt, "training_state.pt"))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run_steps(watch, model, optimizer, scheduler, pixels, ids, order, preempted_at, steps)
