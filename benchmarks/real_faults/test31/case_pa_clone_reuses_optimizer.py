"""A cloned ("shadow") aligner trained with the optimizer of the model it was cloned from.

What the user did: wrapped a trained image->text aligner (flamingo-pytorch PerceiverResampler over frozen
patch tokens, linear projections, CLIP loss) in an estimator object that owns a model and its optimizer,
the way ART's `PyTorchClassifier` does, and used its `clone_for_refitting()` to get fresh "shadow" copies
to train on shadow data (ART's `ShadowModels` for membership inference does exactly this). The clone is
a `copy.deepcopy` of the model with its weights reset, handed the *same* optimizer object.

What went wrong and why: that optimizer was built as `AdamW(model.parameters())` for the original model,
so its param groups hold the original model's tensors, not the deep copy's. Every `backward()` fills the
clone's `.grad` fields, but `optimizer.step()` walks the original's tensors (whose grads are None, so
AdamW skips them) and `optimizer.zero_grad()` clears the original's. The clone never changes: its CLIP
loss stays where its freshly reset weights put it, above ln(B), for the whole run. The thread's words:
"the cloned model(s) was not getting trained while strangely the original model's parameters were
updated, turns out that the optimizer still binds to the original model's parameters".

Threads: Trusted-AI/adversarial-robustness-toolbox#1579 (the report, with the workaround of building a
new optimizer of the same type on the clone's parameters), fixed by #1580 ("use a new optimizer for the
cloned classifier", merged).

Fix (fixed=True): as in #1580, the clone gets a new optimizer of the same type and hyper-parameters bound
to its own parameters, `type(opt)(clone.parameters(), **hyper_parameters)`.

Validation (benchmarks/real_faults/validate.py, seeds 0/1/2, 100 shadow steps, B=64, ln B=4.159;
final = mean of the last 5 CLIP losses):
  fault: final/ln(B) = 1.211 / 1.560 / 1.324 (the clone's weights never move; its logit scale is the
         trained target's, so the loss sits above ln(B))
  fixed: final/ln(B) = 0.026 / 0.029 / 0.029

Ground truth: param_not_in_optimizer.
"""

from __future__ import annotations

import copy
import inspect

import torch

from common import ResamplerAligner, clip_loss, token_pairs

THREADS = ("Trusted-AI/adversarial-robustness-toolbox#1579", "Trusted-AI/adversarial-robustness-toolbox#1580")
CAUSE = "param_not_in_optimizer"
FAMILY = "optimizer setup"

B = 64
TARGET_STEPS = 30  # the target aligner, trained before the shadows (not watched)


def _weight_reset(module):
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()


class AlignerEstimator:
    """A model and the optimizer that trains it, as ART's PyTorchClassifier keeps them."""

    def __init__(self, model, optimizer):
        self.model = model
        self.optimizer = optimizer

    def clone_for_refitting(self, fixed: bool = False) -> "AlignerEstimator":
        model = copy.deepcopy(self.model)
        model.apply(_weight_reset)  # refit from scratch: same architecture, fresh weights
        if fixed:  # adversarial-robustness-toolbox#1580: a new optimizer bound to the clone's parameters
            cls = type(self.optimizer)
            hparams = {k: v for k, v in self.optimizer.defaults.items() if k in inspect.signature(cls).parameters}
            optimizer = cls(model.parameters(), **hparams)
        else:  # the bug: the clone inherits the optimizer that holds the original model's tensors
            optimizer = self.optimizer
        return AlignerEstimator(model, optimizer)

    def fit(self, tokens, texts, steps, generator, session=None):
        model, optimizer = self.model, self.optimizer
        model.train()
        for step in range(steps):
            idx = torch.randperm(len(tokens), generator=generator)[:B]
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = clip_loss(logits)
            loss.backward()
            if session is not None:
                session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt},
                                logits=logits, batch_size=B, inputs=tokens[idx])
            optimizer.step()
            optimizer.zero_grad()


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)

    # the target aligner, trained on its own pairs
    model = ResamplerAligner()
    target = AlignerEstimator(model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01))
    tokens, texts = token_pairs(1024, seed)
    target.fit(tokens, texts, TARGET_STEPS, g)

    # a shadow aligner, cloned from the target and trained on shadow pairs
    shadow = target.clone_for_refitting(fixed=fixed)
    sh_tokens, sh_texts = token_pairs(1024, seed + 100)
    session = watch(shadow.model, shadow.optimizer, batch_size=B)
    shadow.fit(sh_tokens, sh_texts, steps, g, session=session)
    session.close()
