"""Resuming a CLIP fine-tune: the script builds the model and the AdamW optimizer, and only then, on
--resume, replaces `model` with `CLIPModel.from_pretrained(checkpoint_dir)` and loads the optimizer state.
The optimizer still holds the parameters of the randomly initialised model it was built on; the loaded
model gets gradients every step and is never updated, so the resumed run sits at the checkpoint's loss.
Thread: NVIDIA/Megatron-LM#174 ("`optimizer` is built before loading checkpoint and holds the parameters
of a randomly initialized model ... `optimizer` will be untouched and still have the parameters of the
randomly initialized model in its `optimizer.param_groups` instead of the newly loaded `model`");
microsoft/nni#4521 ("the parameters registered in the optimizer are outdated ... reinitializing a new
optimizer"). Fix: build the optimizer from the loaded model (then load its state).
Validated without the tool (seeds 0,1,2; 60 resumed steps after a 20-step first session; batch 64; final =
mean of the last 5 steps): fault 3.806/3.384/3.155 at the resume and 3.743/3.375/3.069 at the end
(ln(64) = 4.159); fixed 3.806/3.384/3.155 -> 1.580/1.528/0.951.
Ground truth: param_not_in_optimizer.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import os
import tempfile

import torch
import torch.nn.functional as F

from common import clip_loss, image_caption_pairs, tiny_clip

THREADS = ("NVIDIA/Megatron-LM#174", "microsoft/nni#4521")
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint_resume"
BATCH = 64
LR = 1e-3


def _step(model, pixels, ids):
    out = model(input_ids=ids, pixel_values=pixels)
    return out.image_embeds, out.text_embeds, out.logits_per_image


def train(watch, steps: int = 60, seed: int = 0, fixed: bool = False) -> None:
    from transformers import CLIPModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    pixels, ids = image_caption_pairs(2048, seed)
    g = torch.Generator().manual_seed(seed)
    with tempfile.TemporaryDirectory() as ckpt:
        # first session: 20 steps, then save model + optimizer (what a previous job left behind)
        model = tiny_clip(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
        for _ in range(20):
            idx = torch.randint(0, len(ids), (BATCH,), generator=g)
            clip_loss(_step(model, pixels[idx], ids[idx])[2]).backward()
            opt.step()
            opt.zero_grad()
        model.save_pretrained(ckpt)
        torch.save(opt.state_dict(), os.path.join(ckpt, "optimizer.pt"))

        # second session (--resume): model and optimizer are built first, as on a fresh start
        model = tiny_clip(seed + 100)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
        model = CLIPModel.from_pretrained(ckpt, attn_implementation="eager")
        if fixed:
            opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
        opt.load_state_dict(torch.load(os.path.join(ckpt, "optimizer.pt")))
        model.train()

        with watch(model, opt, batch_size=BATCH) as w:
            for step in range(steps):
                idx = torch.randint(0, len(ids), (BATCH,), generator=g)
                img, txt, logits = _step(model, pixels[idx], ids[idx])
                loss = clip_loss(logits)
                loss.backward()
                w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=BATCH, extras={"logit_scale": model.logit_scale.exp()})
                opt.step()
                opt.zero_grad()


if __name__ == "__main__":
    import diagnose
    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
