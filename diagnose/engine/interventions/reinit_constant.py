"""reinit_constant: weight tensors that are constant when the watch opens (every element equal: a head initialised
with zeros or ones; a normalisation layer's gain of zeros) redrawn with their module's own default initialisation
(a norm gain: ones) before the first step (tests no_gradient_path, embedding_collapse, symmetric_latents,
nonfinite_divergence).

A layer whose weights are all zero passes no gradient to what feeds it and outputs the same vector for every input
(a ReLU after it stays dead); weights that are all equal give every unit the same function and the same update, so
the output stays on one line: the units are copies of each other, the symmetry `reinit` breaks for latents (a latent
array of ones is one such tensor). A zero weight whose norm the forward takes by hand (`sqrt(sum(w ** 2))`) has an
infinite derivative there: the first backward is 0 * inf = NaN and the first step writes it into the weights. All are
the state a fresh default init removes; nothing else in the run changes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import Intervention, NotApplicable


def constant_weights(model: Any) -> list[tuple[str, torch.Tensor]]:
    """Trainable floating-point tensors of 2 or more dimensions whose elements are all equal, and the gains of
    normalisation layers (a module named *Norm*, its 1-d `weight`) that are all zero."""
    out = []
    modules = dict(model.named_modules())
    for n, p in model.named_parameters():
        if not (p.requires_grad and p.is_floating_point() and p.numel() > 1):
            continue
        flat = p.detach().reshape(-1)
        if p.dim() >= 2 and bool((flat == flat[0]).all()):
            out.append((n, p))
        elif p.dim() == 1 and _norm_gain(modules.get(n.rpartition(".")[0]), p) and not bool(flat.any()):
            out.append((n, p))
    return out


# what a normalisation layer's gain is called: torch's `weight`; `g` in GPT-2 ports (x_hat * g + b), `gamma` in
# TensorFlow ports, `gain`, `scale` in Flax ports
GAIN_NAMES = ("weight", "g", "gain", "gamma", "scale")


def _norm_gain(owner: Any, p: torch.Tensor) -> bool:
    """`p` is the gain of a normalisation layer: x_hat * gain (+ bias); at zero the layer outputs its bias (zeros, or
    one vector) whatever the input, so nothing after it sees the input and nothing before it gets a gradient."""
    return (owner is not None and "norm" in type(owner).__name__.lower()
            and any(getattr(owner, name, None) is p for name in GAIN_NAMES))


class ReinitConstant(Intervention):
    name = "reinit_constant"
    tests = ("no_gradient_path", "embedding_collapse", "symmetric_latents", "nonfinite_divergence")
    changes = ("weight tensors that are constant when the watch opens (all zeros, all ones; a norm layer's gain of "
               "zeros) redrawn with their module's default initialisation (its bias too; a norm gain: ones) before "
               "the first step")

    def setup(self, watch: Any) -> None:
        hit = constant_weights(watch.model)
        if not hit:
            raise NotApplicable("reinit_constant: no trainable weight tensor of 2 or more dimensions is constant, "
                                "and no normalisation gain is zero, when the watch opens")
        self.did.append(redraw(watch.model, hit))


def redraw(model: Any, hit: list[tuple[str, torch.Tensor]]) -> str:
    """Each named tensor of `model` in `hit` redrawn as a fresh model would have it: the module whose `weight` it is
    reset by its own `reset_parameters` (its bias with it); a norm layer's 1-d gain without one: ones; any other
    tensor of 2 or more dimensions (a module without `weight`, in_proj_weight, a bare parameter) as nn.Linear's weight
    (kaiming uniform); any other of fewer (a bias, a bare scalar): zeros. Returns what was done, in words."""
    modules = dict(model.named_modules())
    reset, drawn, zeroed = [], [], []
    with torch.no_grad():
        for name, p in hit:
            owner = modules.get(name.rpartition(".")[0])
            if owner is not None and hasattr(owner, "reset_parameters") and getattr(owner, "weight", None) is p:
                owner.reset_parameters()
                reset.append(name)
            elif p.dim() == 1 and _norm_gain(owner, p):  # every norm layer's default gain
                p.fill_(1.0)
                reset.append(name)
            elif p.dim() >= 2:
                torch.nn.init.kaiming_uniform_(p, a=math.sqrt(5))  # nn.Linear's default for the weight
                drawn.append(name)
            else:
                p.zero_()
                zeroed.append(name)
    said = []
    for names, what in ((reset, "reset {n} module(s) with their default init, bias included"),
                        (drawn, "redrew {n} tensor(s) as nn.Linear does"), (zeroed, "set {n} tensor(s) to zero")):
        if names:
            said.append(f"{what.format(n=len(names))} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})")
    return "; ".join(said)
