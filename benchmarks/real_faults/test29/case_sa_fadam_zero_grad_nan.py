"""FAdam (vendored from lessw2020/FAdam_PyTorch at 93666b5) on an image->text aligner whose residual
adapter sits behind a zero-initialised tanh gate: the whole model turns NaN after the first step.

What the user did: a flamingo-pytorch PerceiverResampler aligner (patch tokens -> resampler -> mean ->
projection; text -> projection; CLIP loss) with a Flamingo-style gated residual adapter on the image
embedding, `x + tanh(gate) * adapter(x)`, the gate initialised to 0 so training starts from the plain
model. The optimizer is FAdam ("Adam is a natural gradient optimizer using diagonal empirical Fisher
information"), copied into the training script from the reference PyTorch implementation
(lessw2020/FAdam_PyTorch, commit 93666b5, the file the issue links to).

What went wrong and why: FAdam's "adaptive epsilon" (step 8 of the paper's algorithm) was written as
`curr_eps = eps * min(1, rms_grad)`. For a parameter tensor whose gradient is exactly zero, rms_grad is
0, so curr_eps is 0; on its first step the bias-corrected beta2 is 0, so the Fisher estimate is
`fim = grad * grad = 0`, `fim_base = fim ** 0.5 + curr_eps = 0`, and the natural gradient
`grad / fim_base` is 0 / 0 = NaN. The NaN goes into the momentum and, through `p.sub_(lr * momentum)`,
into the weights. With the gate at tanh(0) = 0 every adapter weight has an exactly-zero gradient on the
first step, so the adapter becomes NaN at step 0; the gate itself has a non-zero gradient, moves off 0,
and from step 1 on `tanh(gate) * adapter(x)` is NaN: image embeddings, logits and the loss are NaN for
the rest of the run (and every other weight follows on the next backward).

Thread: lessw2020/FAdam_PyTorch#1 ("FAdam Produces NaN when grad is zero", pointing at that line of
93666b5: `min()` should be `max()`, so epsilon is never below its nominal value); the fix was merged in
lessw2020/FAdam_PyTorch#2 ("fixed NaN ..."), which changes the line to `curr_eps = eps * max(1, rms_grad)`.
Fix (fixed=True): the same vendored FAdam with that one-line patch (FAdamFixed).

Validation (validate.py --half test29, seeds 0/1/2, 100 steps, B = 32, ln(B) = 3.4657):
fault: the logged loss is NaN from step 1 on every seed (final loss non-finite, first_nonfinite_step 1);
fixed: final loss 0.1032 / 0.1120 / 0.1082, final / ln(B) = 0.0298 / 0.0323 / 0.0312.

Ground truth: nonfinite_divergence.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import Optimizer

from common import E, ResamplerAligner, clip_loss, token_pairs

THREADS = ("lessw2020/FAdam_PyTorch#1", "lessw2020/FAdam_PyTorch#2")
CAUSE = "nonfinite_divergence"
FAMILY = "optimizer setup"


# -- FAdam, as copied from lessw2020/FAdam_PyTorch fadam.py @ 93666b5 (torchtitan logger import dropped) --
class FAdam(Optimizer):
    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1,
                 betas: Tuple[float, float] = (0.9, 0.999), clip: float = 1.0, p: float = 0.5,
                 eps: float = 1e-8, momentum_dtype: torch.dtype = torch.float32,
                 fim_dtype: torch.dtype = torch.float32):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, momentum_dtype=momentum_dtype,
                        fim_dtype=fim_dtype, clip=clip, p=p)
        super().__init__(params, defaults)

    def adaptive_eps(self, eps, rms_grad):
        return eps * min(1, rms_grad)  # 93666b5, the line the issue points at

    @torch.no_grad()
    def step(self, closure: Optional[callable] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            eps = group["eps"]
            clip = group["clip"]
            pval = group["p"]
            momentum_dtype = group["momentum_dtype"]
            fim_dtype = group["fim_dtype"]
            weight_decay = group["weight_decay"]

            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("FAdam does not support sparse gradients")

                state = self.state[p]
                if len(state) == 0:
                    state.setdefault("step", torch.tensor(0.0))
                    state.setdefault("momentum", torch.zeros_like(p, dtype=momentum_dtype))
                    state.setdefault("fim", torch.ones_like(p, dtype=fim_dtype))

                state["step"] += 1
                step = state["step"]
                momentum = state["momentum"]
                fim = state["fim"]
                grad = p.grad

                # 6 - beta2 bias correction per Section 3.4.4
                curr_beta2 = beta2 * (1 - beta2 ** (step - 1)) / (1 - beta2**step)
                # 7 - update fim
                fim.mul_(curr_beta2).add_(grad * grad, alpha=1 - curr_beta2)
                # 8 - adaptive epsilon
                rms_grad = torch.sqrt(torch.mean((grad * grad)))
                curr_eps = self.adaptive_eps(eps, rms_grad)
                # 9 - compute natural gradient
                fim_base = fim**pval + curr_eps  # **(2*pval)
                grad_nat = grad / fim_base
                # 10 - clip the natural gradient
                rms = torch.sqrt(torch.mean(grad_nat**2))
                divisor = max(1, rms)
                divisor = divisor / clip
                grad_nat = grad_nat / divisor
                # 11 - update momentum
                momentum.mul_(beta1).add_(grad_nat, alpha=1 - beta1)
                # 12 - weight decay
                grad_weights = p / fim_base
                # 13 - clip weight decay
                rms = torch.sqrt(torch.mean(grad_weights**2))
                divisor = max(1, rms)
                divisor /= clip
                grad_weights = grad_weights / divisor
                # 14 - compute update
                full_step = momentum + (weight_decay * grad_weights)
                lr_step = lr * full_step
                # 15 - update weights
                p.sub_(lr_step)
        return loss


class FAdamFixed(FAdam):
    """The same file after the upstream fix (FAdam_PyTorch#2): epsilon never below its nominal value."""

    def adaptive_eps(self, eps, rms_grad):
        return eps * max(1, rms_grad)


class GatedAdapterAligner(ResamplerAligner):
    """The resampler aligner plus a residual adapter on the image embedding behind a tanh gate that
    starts at 0 (Flamingo's gated cross-attention trick: at init the model is the plain aligner)."""

    def __init__(self):
        super().__init__()
        self.adapter = nn.Sequential(nn.Linear(E, E), nn.GELU(), nn.Linear(E, E))
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, tokens, texts):
        x = self.encode_image(tokens)
        x = x + torch.tanh(self.gate) * self.adapter(x)
        return F.normalize(x, dim=-1), F.normalize(self.text(texts), dim=-1)


def train(watch, steps: int = 100, seed: int = 0, fixed: bool = False) -> None:
    torch.manual_seed(seed)
    B = 32
    tokens, texts = token_pairs(1024, seed=seed)
    model = GatedAdapterAligner()
    optimizer = (FAdamFixed if fixed else FAdam)(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)

    session = watch(model, optimizer, batch_size=B)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (B,), generator=g)
        img, txt = model(tokens[idx], texts[idx])
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = clip_loss(logits)
        loss.backward()
        session.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                        batch_size=B, inputs=tokens[idx])
        optimizer.step()
        optimizer.zero_grad()
    session.close()
