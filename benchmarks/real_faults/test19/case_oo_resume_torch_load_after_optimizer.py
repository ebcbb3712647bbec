"""Resuming by `model = torch.load(checkpoint)` after the optimizer was already built on the fresh model.

What the user did: their image-caption alignment script (a small transformers `CLIPModel` from a tiny
config, the model's own contrastive loss, Adam) pickles the whole model every 10 steps with
`torch.save(model, path)`. The first launch was preempted at step 10. To continue, they added a
`--resume` branch, "just before" the training loop, that replaces the model with the pickled one:
`model = torch.load(path)`. The script builds `optimizer = Adam(model.parameters())` earlier, right after
constructing the model, so the optimizer was created on the fresh instance.

What went wrong: the resumed job runs, the loss is computed and backpropagated every step, but it stays
where the first launch left it (near ln(B)) and the weights are identical across steps. `torch.load`
returns a new module object with new Parameter tensors; the optimizer's param groups still hold the
tensors of the instance built before the load. Backward fills the .grad of the loaded model's
parameters, which no optimizer steps; `optimizer.step()` updates the orphaned first instance, which
computes nothing. The resumed model never changes.

Thread: jeromerony/Progressive_Growing_of_GANs-PyTorch#6 ("Unable to resume train after loading saved
model": the reporter's resume block does `G = torch.load(...)`, `D = torch.load(...)` and, asked where it
sits, answers "just before" the training loop; in that repository's mnist_example.py the optimizers,
`optimizerG = Adam(G.parameters(), ...)` and `optimizerD`, are built at lines 77-78, above the loop at
line 102, on the G and D constructed at lines 69-70; "the loaded models work fine ... the weights were
staying the same across epochs"). The loaded models work; they are not the ones the optimizers hold.

Fix (fixed=True): load the checkpoint before building the optimizer, so the optimizer is created on the
parameters that the forward pass uses.

Validation (validate.py, 100 steps in two launches (10 + 90), B=32, ln(B)=3.4657; final = mean of the
last 5 losses of the resumed launch / ln(B)):
    seed 0: fault 0.9608, fixed 0.1637
    seed 1: fault 0.9241, fixed 0.1413
    seed 2: fault 0.9145, fixed 0.1583

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import os
import tempfile

import torch

from common import image_caption_pairs, tiny_clip

THREADS = ("jeromerony/Progressive_Growing_of_GANs-PyTorch#6",)
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint and resume"

B = 32
SAVE_EVERY = 10


def _launch(watch, ckpt: str, seed: int, first_step: int, last_step: int, resume: bool, fixed: bool) -> None:
    """One run of the user's script: build the model and optimizer, maybe resume, train, checkpoint."""
    model = tiny_clip(seed, width=64)
    if resume and fixed:
        model = torch.load(ckpt, weights_only=False)  # fix: load first, then build the optimizer
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    pixels, input_ids = image_caption_pairs(2048, seed)
    g = torch.Generator().manual_seed(seed * 1000 + first_step)

    if resume and not fixed:
        model = torch.load(ckpt, weights_only=False)  # the --resume branch, just before the loop

    session = watch(model, optimizer, batch_size=B)
    model.train()
    for step in range(first_step, last_step):
        idx = torch.randint(0, len(pixels), (B,), generator=g)
        out = model(input_ids=input_ids[idx], pixel_values=pixels[idx], return_loss=True)
        optimizer.zero_grad()
        out.loss.backward()
        session.observe(step, losses={"clip": out.loss},
                        embeddings={"image": out.image_embeds, "text": out.text_embeds},
                        logits=out.logits_per_image, batch_size=B, inputs=pixels[idx])
        optimizer.step()
        if (step + 1) % SAVE_EVERY == 0 or step + 1 == last_step:  # periodic + on SIGTERM
            torch.save(model, ckpt)
    session.close()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    preempted_at = min(SAVE_EVERY, steps // 2)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "last.pt")
        _launch(watch, ckpt, seed, 0, preempted_at, resume=False, fixed=fixed)  # the job dies here
        _launch(watch, ckpt, seed, preempted_at, steps, resume=True, fixed=fixed)  # relaunched with --resume
