"""Interventions on which parameters train.

  add_missing_params  trainable parameters that get gradients but are in no param group join the
                      optimizer (a new group with the optimizer's defaults, as `add_param_group` gives a
                      group that names no settings) at the first step, and so do tensors
                      with gradients on the loss's path in no registered module (a tower kept in a Python
                      list or dict: the `graph_leaves` probe's walk of the autograd graph) (tests
                      param_not_in_optimizer)
  unfreeze            parameters with requires_grad=False (matching `pattern`) are unfrozen and put into
                      the optimizer (tests no_gradient_path)
  reinit              parameters matching `pattern` (default: latents / queries) redrawn from N(0, std)
                      before the first step (tests symmetric_latents)
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .base import Intervention, NotApplicable, require_optimizer

# torch's schedulers' lists with one entry per param group (a milestone list can have as many entries by chance)
PER_GROUP = ("base_lrs", "_last_lr", "lr_lambdas", "max_lrs", "min_lrs", "base_momentums", "max_momentums")


def _join(optimizer: Any, params: list) -> None:
    """`params` join as a new group that names no settings, so torch gives it the optimizer's defaults: what the
    user's constructor said a group without its own settings gets. Group 0's settings would be an accident of
    order (hand-built groups often list the backbone first, at its small lr: heads left out of the list then
    joined at the backbone's 1e-5 rather than the constructor's 1e-3)."""
    before = len(optimizer.param_groups)
    optimizer.add_param_group({"params": params})
    if "initial_lr" in optimizer.param_groups[0]:  # a scheduler's start value, as torch's schedulers set it
        optimizer.param_groups[-1].setdefault("initial_lr", optimizer.param_groups[-1]["lr"])
    _extend_schedulers(optimizer, before)


def _extend_schedulers(optimizer: Any, groups_before: int) -> None:
    """The new group follows group 0's schedule from its own start lr: every scheduler built on the optimizer
    keeps per-group lists (base_lrs, the last lrs, LambdaLR's lambdas, CyclicLR's max_lrs, ReduceLROnPlateau's
    min_lrs) that torch zips strictly with the param groups, so each such list gets an entry appended: the new
    group's lr for the lr lists, group 0's entry for the others (a scheduler left as it was fails its next step:
    "zip() argument 2 is shorter than argument 1")."""
    from probes.optimizer import schedulers_of

    lr = optimizer.param_groups[-1]["lr"]
    for sched in schedulers_of(optimizer):
        for name in PER_GROUP:
            value = getattr(sched, name, None)
            if isinstance(value, list) and len(value) == groups_before and value:
                value.append(lr if name in ("base_lrs", "_last_lr") else value[0])


def add_missing(model: Any, optimizer: Any, leaves: list | None = None) -> list[str]:
    """Trainable parameters holding a gradient but in no param group join the optimizer, with the unregistered
    `leaves` (tensors on the loss's path in no module) that hold one; their names."""
    inside = {id(p) for g in optimizer.param_groups for p in g["params"]}
    missing = [(n, p) for n, p in model.named_parameters()
               if p.requires_grad and p.grad is not None and id(p) not in inside]
    missing += [(f"unregistered {'x'.join(map(str, v.shape)) or 'scalar'}", v) for v in leaves or []
                if v.requires_grad and v.grad is not None and id(v) not in inside]
    if missing:
        _join(optimizer, [p for _, p in missing])
    return [n for n, _ in missing]


class AddMissingParams(Intervention):
    """Checked before every step, not only the first: a part unfrozen mid-run (requires_grad set later, the
    optimizer built earlier over what was trainable then) joins the optimizer at the step it first gets a
    gradient."""

    name = "add_missing_params"
    tests = ("param_not_in_optimizer",)
    changes = ("trainable parameters that get gradients but are in no param group are added to the optimizer, and "
               "so are tensors with gradients on the loss's path in no registered module")

    def setup(self, watch: Any) -> None:
        self._opt = require_optimizer(watch, self.name)
        self._model = watch.model
        self._graph = watch.session.probes.get("graph_leaves")  # None where the user's probes leave it out
        self._steps, self._added = 0, 0

    def before_step(self, optimizer: Any) -> None:
        self._steps += 1
        missing = add_missing(self._model, optimizer, self._graph.unregistered() if self._graph else None)
        if missing:
            self._added += len(missing)
            self.did.append(f"step {self._steps}: added {len(missing)} parameter tensor(s) to the optimizer ("
                            f"{', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
        elif not self.did and self._steps == 1:
            self.did.append("at step 1 every parameter with a gradient was in a param group")


class Unfreeze(Intervention):
    name = "unfreeze"
    tests = ("no_gradient_path",)
    changes = "frozen parameters (requires_grad=False, matching `pattern`) unfrozen and added to the optimizer"
    defaults = {"pattern": ".*"}

    def setup(self, watch: Any) -> None:
        opt = require_optimizer(watch, self.name)
        pat = re.compile(str(self.params["pattern"]))
        frozen = [(n, p) for n, p in watch.model.named_parameters()
                  if not p.requires_grad and p.is_floating_point() and pat.search(n)]
        if not frozen:
            raise NotApplicable(f"unfreeze: no frozen parameter matches {self.params['pattern']!r} (nothing is "
                                "frozen by requires_grad; a part run under torch.no_grad() cannot be unfrozen "
                                "from outside the script)")
        for _, p in frozen:
            p.requires_grad_(True)
        inside = {id(p) for g in opt.param_groups for p in g["params"]}
        _join(opt, [p for _, p in frozen if id(p) not in inside])
        self.did.append(f"unfroze {len(frozen)} tensor(s), {sum(p.numel() for _, p in frozen):,} parameters "
                        f"({', '.join(n for n, _ in frozen[:3])}{', ...' if len(frozen) > 3 else ''})")


class Reinit(Intervention):
    name = "reinit"
    tests = ("symmetric_latents",)
    changes = "parameters matching `pattern` (latents, queries) redrawn from N(0, std) before the first step"
    defaults = {"pattern": r"latent|quer", "std": 0.02}

    def setup(self, watch: Any) -> None:
        pat = re.compile(str(self.params["pattern"]), re.IGNORECASE)
        hit = [(n, p) for n, p in watch.model.named_parameters() if pat.search(n) and p.dim() >= 2]
        if not hit:
            raise NotApplicable(f"reinit: no parameter of 2 or more dimensions matches {self.params['pattern']!r}")
        with torch.no_grad():
            for _, p in hit:
                p.normal_(0.0, float(self.params["std"]))
        self.did.append(f"redrew {', '.join(n for n, _ in hit[:4])} from N(0, {self.params['std']})")
