"""Resume that rebinds `model` to a new instance built by a `from_checkpoint` class method after the optimizer
was created: the optimizer keeps stepping the discarded instance's tensors, the model that runs forward is
never updated, and the resumed run sits at the checkpoint's loss (near ln(B)) for good.

What the user did: a Perceiver aligner job (perceiver-pytorch Perceiver over patch tokens, mean over latents,
projections, learnable logit scale) was pre-empted right after it started; it had written a checkpoint
(model + optimizer state) at step 2. The resume path of the script builds the model and the AdamW optimizer
as for a fresh run, then `model = Aligner.from_checkpoint(path)` -- a class method that constructs and
returns a *new* module with the saved weights -- and `optimizer.load_state_dict(ckpt["optimizer"])`. The
optimizer's param groups still hold the first instance's parameters (restoring its state only refills their
moments). Every step: forward and backward run through the loaded instance (its .grad fill up),
`optimizer.step()` updates the orphaned instance. No error, no warning; the loss is flat from the resume on.

The threads: neuraloperator/neuraloperator#480 (checkpointing and loading training states): "indeed the
`from_checkpoint` should be a class method and returns a new instance, we should be loading the state-dict
in the existing model instead"; Lightning-AI/pytorch-lightning#4789, "when I use the following command it seems
it doesn't update the weights in the model" (`model.load_from_checkpoint(...)`) -- maintainer: it "is a class
constructor, the same as `pandas.read_csv` so the proper usage should be `model =
LitModel.load_from_checkpoint(...)`" (so the object bound to `model` changes); and
NVIDIA/Megatron-LM#174, "optimizer is built before loading checkpoint and holds the parameters of a
randomly initialized model ... and will still have the parameters of the randomly initialized model in its
`optimizer.param_groups` instead of the newly loaded `model`".

Thread: neuraloperator/neuraloperator#480
Thread: NVIDIA/Megatron-LM#174
Thread: Lightning-AI/pytorch-lightning#4789
Fix: load the checkpoint into the existing instance (`model.load_state_dict(ckpt["model"])`), or build the
optimizer after the model object is final, then `optimizer.load_state_dict(ckpt["optimizer"])`.

Validation (benchmarks/real_faults/validate.py --half test17 --only case_ii_resume_new_instance, seeds 0 1 2,
B = 32, ln(B) = 3.4657, 2 steps before the checkpoint, 120 resumed steps observed): fault final loss / ln(B)
= 1.0440 / 1.1553 / 1.0103 (final 3.618 / 4.004 / 3.501, first resumed loss 3.725 / 3.641 / 3.542); fixed
0.0301 / 0.0413 / 0.0357.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import io
import pathlib

import torch
from common import PerceiverAligner, clip_loss, token_pairs

THREADS = ("neuraloperator/neuraloperator#480", "NVIDIA/Megatron-LM#174", "Lightning-AI/pytorch-lightning#4789")
CAUSE = "param_not_in_optimizer"
FAMILY = "checkpoint resume"

B, LR, PREEMPTED_AT = 32, 1e-3, 2


class Aligner(PerceiverAligner):
    @classmethod
    def from_checkpoint(cls, buf: io.BytesIO) -> "Aligner":
        buf.seek(0)
        ckpt = torch.load(buf, weights_only=True)
        model = cls()
        model.load_state_dict(ckpt["model"])
        return model


def _batch(tokens, texts, g):
    idx = torch.randint(0, len(tokens), (B,), generator=g)
    return tokens[idx], texts[idx]


def _step(model, tok, txt):
    img, tx = model(tok, txt)
    logits = model.logit_scale.exp() * img @ tx.t()
    return clip_loss(logits), logits, img, tx


def _first_job(tokens, texts, g) -> io.BytesIO:
    """The pre-empted job: a few steps, then the checkpoint it left behind (an in-memory file here)."""
    model = Aligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    for _ in range(PREEMPTED_AT):
        loss = _step(model, *_batch(tokens, texts, g))[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": PREEMPTED_AT}, buf)
    return buf


def train(watch, steps: int = 120, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    g = torch.Generator().manual_seed(seed)
    path = _first_job(tokens, texts, g)

    # the resume path of the script: model and optimizer built as for a fresh run, then restored
    model = Aligner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    path.seek(0)
    ckpt = torch.load(path, weights_only=True)
    if fixed:
        model.load_state_dict(ckpt["model"])  # into the instance the optimizer holds
    else:
        model = Aligner.from_checkpoint(path)  # a new instance: the optimizer still holds the old one
    optimizer.load_state_dict(ckpt["optimizer"])
    start = ckpt["step"]

    with watch(model, optimizer, batch_size=B) as w:
        for step in range(start, start + steps):
            tok, txt = _batch(tokens, texts, g)
            loss, logits, img, tx = _step(model, tok, txt)
            optimizer.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": tx}, logits=logits,
                      batch_size=B, inputs=tok, extras={"logit_scale": model.logit_scale.exp()})
            optimizer.step()


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
