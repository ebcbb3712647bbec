"""own_step_off: an optimizer that sizes its own steps (transformers' Adafactor with `relative_step=True`, where the
lr is None and the step is min(1e-6 x step, 1/sqrt(step)) with `warmup_init`, times the weights' RMS) given an
explicit learning rate instead: `relative_step`, `warmup_init` and `scale_parameter` off, `lr` the transformers
documentation's fine-tuning setting (1e-3; huggingface/transformers#10526). Tests learning_rate_too_low.

Applied to the param groups when the watch opens, before the first step; the optimizer reads them at each step.
Not applicable: no param group has `relative_step` set.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, NotApplicable, require_optimizer


class OwnStepOff(Intervention):
    name = "own_step_off"
    tests = ("learning_rate_too_low",)
    answers = ("weights_barely_moved", "update_ratio_low")
    changes = ("an optimizer that sizes its own steps (Adafactor relative_step=True, lr None) given the explicit lr "
               "`lr` with relative_step, warmup_init and scale_parameter off")
    defaults = {"lr": 1e-3}

    def setup(self, watch: Any) -> None:
        opt = require_optimizer(watch, self.name)
        groups = [g for g in opt.param_groups if g.get("relative_step")]
        if not groups:
            raise NotApplicable(f"{self.name}: no param group of {type(opt).__name__} sizes its own steps "
                                "(relative_step is not set)")
        for g in groups:
            g.update(relative_step=False, warmup_init=False, scale_parameter=False, lr=float(self.params["lr"]))
        self.did.append(f"{len(groups)} param group(s) of {type(opt).__name__} set to lr {self.params['lr']:g} with "
                        "relative_step, warmup_init and scale_parameter off")
        self._before: list[Any] | None = None
        self._steps = 0

    def before_step(self, optimizer: Any) -> None:
        if self._steps == 0:  # the first step at the explicit lr: the weights it moves are the evidence it ran
            self._before = [p.detach().clone() for g in optimizer.param_groups for p in g["params"]]

    def after_step(self, optimizer: Any) -> None:
        self._steps += 1
        before, self._before = self._before, None
        if before is not None:
            params = [p.detach() for g in optimizer.param_groups for p in g["params"]]
            moved = sum(not torch.equal(p, b) for p, b in zip(params, before))
            if moved:
                self.reached.append(f"optimizer step 1, at lr {self.params['lr']:g}, moved {moved} of {len(params)} "
                                    "weight tensors")
