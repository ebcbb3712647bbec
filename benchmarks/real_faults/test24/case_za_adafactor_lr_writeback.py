"""Adafactor with a fixed lr and `scale_parameter=True` writes its own scaled lr back into the param group.

What the user did: swapped AdamW for Adafactor to save optimizer memory while training a perceiver-pytorch
latent-attention aligner (patch tokens -> Perceiver -> mean over latents -> projection, text -> MLP, CLIP loss),
with a manual lr as the Adafactor docstring describes it: `lr=1e-2` (Adafactor's own default step size),
`relative_step=False`, `warmup_init=False`, leaving `scale_parameter` at its default `True`. The optimizer is the
Adafactor that transformers <= 4.2 shipped (the fairseq code that ParlAI also vendored); here it is the class
`Adafactor` below, the released class with the pre-fix `_get_lr`. No scheduler: the lr is meant to be constant.

What went wrong and why: that Adafactor computed each parameter's step size as
`group["lr"] = param_scale * rel_step_sz` with `rel_step_sz = group["lr"]` when `relative_step=False` and
`param_scale = max(eps2, RMS(p))` when `scale_parameter=True`, i.e. it stored the scaled step size back into the
param group and read it again for the next tensor. The lr therefore compounds: every parameter multiplies it by
its own RMS (about 0.02-0.2 here, 1e-3 for zero-initialised biases): over the 60 tensors of the model the product
underflows, and at the end of the very first step the group's lr is exactly 0 and stays 0. Only the first few
tensors of step 0 get a non-negligible update; then the model is frozen and the CLIP loss stays at its initial
value (above ln(B), the logit scale is 1/0.07) for the whole run. ParlAI's log in its thread shows the same
symptom with the same fairseq Adafactor under a fixed lr: `lr 1.565e-31` after 22 updates, then `lr 0`, the loss
not improving ("For these schedulers [fixed LR, reduce-on-plateau], LR go to 0 after a few training steps").

Threads: huggingface/transformers#9751 ("AdaFactor: avoid updating group["lr"] attributes": with
`relative_step=False` and `scale_parameter=True` "updating group["lr"] makes the result of ._get_lr() depend on
the previous call, i.e., on the scale of other parameters"; merged), facebookresearch/ParlAI#2547 (ParlAI's copy
of the same optimizer with a fixed-lr scheduler: the lr goes to 0 after a few updates).

Fix (fixed=True): the merged fix, a local `lr = self._get_lr(group, state)` instead of writing it into the
group: `transformers.optimization.Adafactor` as released after #9751, same arguments.

Validation (validate.py --half test24, seeds 0/1/2, 100 steps, B=32, final CLIP loss / ln(B)):
fault 1.288 / 1.436 / 1.394 (final 4.46 / 4.98 / 4.83 vs ln 32 = 3.466; the group lr is exactly 0 from the
end of step 0), fixed 0.008 / 0.014 / 0.011.

Ground truth: learning_rate_too_low.
"""

from __future__ import annotations

import torch
from common import PerceiverAligner, clip_loss, token_pairs
from transformers.optimization import Adafactor as ReleasedAdafactor

THREADS = ("huggingface/transformers#9751", "facebookresearch/ParlAI#2547")
CAUSE = "learning_rate_too_low"
FAMILY = "optimizer setup"

B = 32


class Adafactor(ReleasedAdafactor):
    """Adafactor as transformers <= 4.2 / fairseq / ParlAI had it: `step` did `group["lr"] = self._get_lr(group,
    state)` and scaled the update by `group["lr"]`, so the next tensor's `_get_lr` starts from the scaled value."""

    def _get_lr(self, param_group, param_state):
        param_group["lr"] = ReleasedAdafactor._get_lr(param_group, param_state)
        return param_group["lr"]


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    tokens, texts = token_pairs(1024, seed)
    model = PerceiverAligner()
    opt_cls = ReleasedAdafactor if fixed else Adafactor
    optimizer = opt_cls(model.parameters(), lr=1e-2, relative_step=False, warmup_init=False)

    g = torch.Generator().manual_seed(seed)
    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
    session.close()
