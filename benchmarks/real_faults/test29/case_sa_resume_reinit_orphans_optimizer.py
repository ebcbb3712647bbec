"""Resuming from a checkpoint rebuilds the model's layers inside `load_checkpoint` (it calls
`self.__init__` again) after the optimizer was built: the optimizer keeps stepping the orphaned old
parameters and the resumed run never moves from the checkpoint's loss.

What the user did: a perceiver-pytorch Perceiver aligner (patch tokens -> Perceiver latents -> mean ->
projection; text -> MLP; CLIP loss) trained with AdamW (lr 5e-4), with the checkpoint helpers of
chickenbestlover/RNN-Time-series-Anomaly-Detection copied onto the model: `save_checkpoint` stores the
constructor config, the state dict, the optimizer state and the step; `load_checkpoint` calls
`self.initialize(config)`, i.e. `self.__init__(**config)`, to rebuild the model from the stored config,
then `self.load_state_dict(...)`. The script builds model and optimizer first and, with `--resume`,
loads the checkpoint afterwards (`model.load_checkpoint(ckpt)`, `optimizer.load_state_dict(...)`),
exactly as 1_train_predictor.py does. The earlier job was preempted right after its first checkpoint
(step 5); this job resumes from it and trains `steps` more steps.

What went wrong and why: re-running `__init__` on the live module replaces every submodule and
nn.Parameter with new objects; `load_state_dict` then copies the checkpoint into those new tensors. The
optimizer was constructed before, from `model.parameters()` of the original objects, and
`optimizer.load_state_dict` restores its state onto those same old tensors. From then on the forward
uses the new parameters, which get gradients every step but belong to no optimizer param group, while
`optimizer.step()` walks the old ones, which nothing reads (their .grad is never set, so the step
skips them). The loss of the resumed run stays at the 5-step checkpoint's value for the whole run.

Thread: chickenbestlover/RNN-Time-series-Anomaly-Detection#46 ("when i use resume=True to keep
training model, but the parameters don't change, the loss don't go down"). The thread has no
maintainer reply; the mechanism is the repository's own code at that time: 1_train_predictor.py builds
`optimizer = optim.Adam(model.parameters(), ...)` at the top and, under `if args.resume`, calls
`model.load_checkpoint(...)` then `optimizer.load_state_dict(...)`; model/model.py's `load_checkpoint`
calls `self.initialize(args_, ...)`, which is `self.__init__(...)`, before `self.load_state_dict(...)`.
Fix (fixed=True): build the optimizer from the model's parameters after the checkpoint is loaded (then
restore its state), so its param groups hold the tensors the forward uses.

Validation (validate.py --half test29, seeds 0/1/2, 100 resumed steps, B = 32, ln(B) = 3.4657):
fault: final loss 3.1851 / 3.4163 / 3.2542, final / ln(B) = 0.9190 / 0.9857 / 0.9390 (the checkpoint's
level: first resumed step 3.1551 / 3.3588 / 3.2797);
fixed: final loss 0.2171 / 0.2555 / 0.2083, final / ln(B) = 0.0626 / 0.0737 / 0.0601.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import os
import tempfile

import torch

from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("chickenbestlover/RNN-Time-series-Anomaly-Detection#46",)
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint and resume"

B = 32
SAVE_EVERY = 5  # the earlier job saved at step 5 and was then preempted


class Aligner(PerceiverAligner):
    """The user's model with the repository's checkpoint helpers (RNNPredictor.initialize /
    save_checkpoint / load_checkpoint), adapted to this model's constructor."""

    def __init__(self, latents: int = 8):
        super().__init__(latents=latents)
        self.config = dict(latents=latents)

    def initialize(self, config):
        self.__init__(**config)

    def save_checkpoint(self, state, path):
        torch.save(state, path)

    def load_checkpoint(self, checkpoint):
        start_step = checkpoint["step"] + 1
        self.initialize(checkpoint["config"])
        self.load_state_dict(checkpoint["state_dict"])
        return start_step


def make_optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)


def train_step(model, optimizer, tokens, texts, idx):
    img, txt = model(tokens[idx], texts[idx])
    logits = model.logit_scale.exp() * img @ txt.t()
    loss = clip_loss(logits)
    loss.backward()
    return img, txt, logits, loss


def earlier_job(path, tokens, texts, seed):
    """The job that was preempted: trains from scratch, saves every SAVE_EVERY steps, dies after the first save."""
    torch.manual_seed(seed)
    model = Aligner()
    optimizer = make_optimizer(model)
    g = torch.Generator().manual_seed(seed)
    for step in range(SAVE_EVERY + 1):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        train_step(model, optimizer, tokens, texts, idx)
        optimizer.step()
        optimizer.zero_grad()
        if step == SAVE_EVERY:
            model.save_checkpoint({"step": step, "config": model.config, "state_dict": model.state_dict(),
                                   "optimizer": optimizer.state_dict()}, path)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    tokens, texts = token_pairs(1024, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint.pth")
        earlier_job(path, tokens, texts, seed)

        # this job: `python train.py --resume`
        torch.manual_seed(seed + 1)
        model = Aligner()
        if not fixed:
            optimizer = make_optimizer(model)
        checkpoint = torch.load(path)
        start_step = model.load_checkpoint(checkpoint)
        if fixed:
            optimizer = make_optimizer(model)
        optimizer.load_state_dict(checkpoint["optimizer"])

    g = torch.Generator().manual_seed(seed + 1)
    session = watch(model, optimizer, batch_size=B)
    for step in range(start_step, start_step + steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt, logits, loss = train_step(model, optimizer, tokens, texts, idx)
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
        optimizer.zero_grad()
    session.close()
