"""Trainable tensors that are exactly zero and get exactly-zero gradients at every measured step: a fixed point of
gradient descent (probe ``gradient_flow``: per parameter param_norm and zero_grad_frac)."""

from __future__ import annotations

import pandas as pd

from ..definitions import learned
from ..findings import Finding
from .base import Emit, Rule, RunContext, end_loss, rnd, select, span
from .persistence import PERSIST_MIN_OBS, loss_falling

# Factors of one product sit close together in the module tree: DoRA's `layer.lora_A` / `layer.lora_B` one level below
# their module, peft's `q_proj.lora_A.default.weight` three. A lone tensor of zeros whose gradient is zero by
# construction (an attention key's bias: softmax ignores a shift shared by a row's logits) has no such partner; the
# same bias of the next layer is four levels away (`layers.0.self_attn.k_proj.bias`).
PARTNER_DEPTH = 3


class ZeroFixedPoint(Rule):
    """A tensor of zeros whose gradient is exactly zero stays zero whatever the optimizer: a product of factors that
    all start at zero (both LoRA factors, a gate and the branch it gates), where each factor's gradient is the other's
    value times the upstream gradient. Weight decay keeps zero at zero; Adam's update of a zero gradient is zero. Read
    where two such tensors sit together (`PARTNER_DEPTH`) in a layer that gets gradients elsewhere."""

    topic = "gradients"
    emits = (Emit("zero_fixed_point", ("warning", "error"), "no_gradient_path", 1),)
    needs = (("gradient_flow", "zero_grad_frac"), ("gradient_flow", "param_norm"))
    thresholds = {"PERSIST_MIN_OBS": PERSIST_MIN_OBS, "PARTNER_DEPTH": PARTNER_DEPTH}

    def check(self, df: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        stuck, steps = _stuck(df)
        if not stuck:
            return []
        mean, ln_b = end_loss(df)
        severity = "warning" if learned(mean, ln_b) else "error"
        ev = {"parameters": stuck[:12], "count": len(stuck), "readings": len(steps), "steps": span(steps.to_series()),
              "loss_end": rnd(mean), "chance_ln_B": rnd(ln_b)}
        return [Finding(
            "zero_fixed_point", severity, ctx.name,
            f"{len(stuck)} trainable tensor(s) are exactly zero and received exactly-zero gradients at each of "
            f"{len(steps)} measured steps ({', '.join(stuck[:4])}{' ...' if len(stuck) > 4 else ''}): zero is a fixed "
            "point of gradient descent for them. A product of factors that all start at zero (both low-rank factors "
            "of a LoRA/DoRA update, a gate and the branch it gates) gives each factor the other's value, zero, as its "
            "gradient, so none of them ever moves and the path they form carries nothing to the loss.", ev,
            "Initialise one factor randomly and the other at zero (LoRA: A ~ N(0, 1/r), B = 0): the product still "
            "starts at zero, its gradient does not.", stuck[0])]

    def alarm(self, finding: Finding, df: pd.DataFrame) -> bool:
        """An error whose readings span PERSIST_MIN_OBS observations over which the loss did not fall."""
        if finding.severity != "error":
            return False
        _, steps = _stuck(df)
        return len(steps) >= PERSIST_MIN_OBS and not loss_falling(df, int(steps[0]))


def _stuck(df: pd.DataFrame) -> tuple[list[str], pd.Index]:
    """Parameters whose every reading (at least PERSIST_MIN_OBS) has param_norm 0 and zero_grad_frac 1, and the
    steps read."""
    zero = select(df, "gradient_flow", "zero_grad_frac")
    if zero.empty:
        return [], pd.Index([])
    norm = select(df, "gradient_flow", "param_norm")
    z = zero.pivot_table(index="step", columns="target", values="value")
    n = norm.pivot_table(index="step", columns="target", values="value").reindex(index=z.index, columns=z.columns)
    held = ((z >= 1.0) & (n == 0.0)).sum()
    count = z.notna().sum()
    # a bias adds to its module's output, its gradient that output's summed: exactly zero only where the module gets
    # none (a key's or query's bias under a softmax over one key), a cut upstream, never a factor's zero partner
    names = [t for t in z.columns if count[t] >= PERSIST_MIN_OBS and held[t] == count[t]
             and t.rpartition(".")[2] != "bias"]
    # the gradient reaches their layer (other tensors of it get some): what stops at these is their zero partner. Where
    # the whole layer gets exactly-zero gradients the loss sends it none (embeddings that are one row for every
    # sample give the logits a gradient that sums to zero over them): a collapse upstream, not a fixed point here
    layers = select(df, "gradient_flow.layer", "zero_grad_frac")
    last = layers[layers["step"] == layers["step"].max()].set_index("target")["value"] if len(layers) else None
    names = [t for t in names if _layer_gets_gradient(t, last)]
    return sorted(t for t in names if any(_partners(t, u) for u in names if u != t)), z.index



def _partners(a: str, b: str) -> bool:
    """`a` and `b` both at most PARTNER_DEPTH levels below the module they share."""
    pa, pb = a.split("."), b.split(".")
    common = 0
    while common < min(len(pa), len(pb)) and pa[common] == pb[common]:
        common += 1
    return len(pa) - common <= PARTNER_DEPTH and len(pb) - common <= PARTNER_DEPTH


def _layer_gets_gradient(name: str, layers: pd.Series | None) -> bool:
    """The layer holding parameter `name` (the longest layer target its name starts with) had a share of exactly-zero
    gradient elements under 1 at the last reading; True where no layer reading holds it."""
    if layers is None:
        return True
    owners = [t for t in layers.index if t == "<root>" or name.startswith(t + ".")]
    if not owners:
        return True
    return float(layers[max(owners, key=len)]) < 1.0
