"""The trainable resampler is unfrozen *after* the optimizer was built from `requires_grad` parameters.

What the user did: a flamingo-pytorch PerceiverResampler + projection over frozen patch tokens, aligned to a
frozen text tower (its projection is part of the frozen text model: `model.text` stays frozen by design), with
a learnable logit scale. Their setup code freezes everything, builds the optimizer the usual way for a
partly-frozen model -- `AdamW(filter(lambda p: p.requires_grad, model.parameters()))` -- and only then runs
their `configure_stage("align")` helper that unfreezes the resampler and the image projection.

The bug: the optimizer only ever holds the parameters that required grad when it was created (here: the logit
scale). The resampler and projection get gradients every step (`requires_grad=True` now) but no optimizer step
ever touches them; the image embeddings stay a random function of the tokens, the text side is frozen, and the
loss stays at ln(B) (the logit scale alone can only move it towards uniform).

From the threads:
- fastai/fastai#2133 (maintainer): "the optimizer needs to be created again because at creation, it only takes
  trainable parameters. After a freeze/unfreeze those change so it needs to be adjusted."
- skorch-dev/skorch#261: filter the `requires_grad=False` parameters out of the optimizer when freezing;
  "The pytorch `Optimizer` class only checks `require_grad` during initialization."
- pytorch/pytorch#7338: the `Adam(filter(lambda p: p.requires_grad, model.parameters()))` idiom this setup uses.

Thread: fastai/fastai#2133
Thread: skorch-dev/skorch#261
Thread: pytorch/pytorch#7338
Fix: build the optimizer after `configure_stage` (or `opt.add_param_group` the unfrozen parameters), so the
resampler and projection are in it.

Validation (validate.py --half test17, seeds 0 1 2, B=64, ln(B)=4.1589, 150 steps, one CPU thread):
fault final CLIP loss 5.6974 / 5.2473 / 5.1377, final/ln(B) = 1.3699 / 1.2617 / 1.2354 (above chance: random embeddings
at logit scale ~14, only the scale itself creeping down); fixed final 0.1432 / 0.1679 / 0.1391, final/ln(B) =
0.0344 / 0.0404 / 0.0334. 1-3 s per run.

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import ResamplerAligner, clip_loss, token_pairs  # noqa: E402

THREADS = ("fastai/fastai#2133", "skorch-dev/skorch#261", "pytorch/pytorch#7338")
CAUSE = "param_not_in_optimizer"
FAMILY = "frozen_gradient_flow"


def freeze_all_but_temperature(model: ResamplerAligner) -> None:
    for name, p in model.named_parameters():
        p.requires_grad = name == "logit_scale"


def configure_stage(model: ResamplerAligner, stage: str) -> None:
    """The user's stage switch: in the alignment stage the resampler and the image projection train."""
    if stage == "align":
        model.resampler.requires_grad_(True)
        model.proj.requires_grad_(True)


def make_optimizer(model: ResamplerAligner) -> torch.optim.Optimizer:
    return torch.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-3, weight_decay=0.01)


def train(watch, steps: int = 150, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed=seed)
    model = ResamplerAligner(latents=8, depth=2)
    freeze_all_but_temperature(model)
    if fixed:
        configure_stage(model, "align")
        opt = make_optimizer(model)
    else:
        opt = make_optimizer(model)  # built while only the logit scale requires grad
        configure_stage(model, "align")  # unfrozen too late: not in the optimizer
    B = 64
    g = torch.Generator().manual_seed(seed + 100)
    with watch(model, opt, batch_size=B) as w:
        for step in range(steps):
            idx = torch.randperm(len(tokens), generator=g)[:B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=B, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp().detach()})
            opt.step()


if __name__ == "__main__":
    import diagnose

    train(lambda m, o, **kw: diagnose.watch(m, o, out="runs/" + pathlib.Path(__file__).stem, **kw))
