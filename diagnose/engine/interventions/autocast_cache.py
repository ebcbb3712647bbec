"""clear_autocast_cache: the autocast cache cleared after every optimizer step taken inside an autocast region
(tests param_not_in_optimizer).

Inside one autocast region the first use of a leaf parameter that requires grad caches its low-precision cast, and
every later use in the region reuses it until the outermost region exits. A script that opens the region once around
the whole loop (forward, backward and `optimizer.step()` inside it) keeps computing with the casts of the first
step's weights while the optimizer moves the fp32 parameters. An optimizer step post-hook calls
`torch.clear_autocast_cache()` where a region is open on the parameters' device: the next forward casts the weights
as they are now, as a region per forward would. Not applicable: no region was open at any optimizer step by the
second `observe` (the script's autocast already ends before its steps).
"""

from __future__ import annotations

from typing import Any

import torch

from probes.forward_weights import autocast_open, param_device_type

from .base import Intervention, require_optimizer


class ClearAutocastCache(Intervention):
    name = "clear_autocast_cache"
    tests = ("param_not_in_optimizer",)
    answers = ("forward_weights_stale",)
    changes = ("the autocast cache cleared after every optimizer step taken inside an autocast region: the next "
               "forward casts the weights as the step left them")

    def setup(self, watch: Any) -> None:
        require_optimizer(watch, self.name)
        self._device = param_device_type(watch.model)
        self._cleared = 0

    def after_step(self, optimizer: Any) -> None:
        if autocast_open(self._device):
            torch.clear_autocast_cache()
            self._cleared += 1
            if self._cleared == 1:  # nothing for `reached`: a region that ends with each step clears its cache anyway
                self.did.append("cleared the autocast cache after each optimizer step (a region was open at the "
                                "first one)")

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self.require_acted_by_second_observe(self._cleared, "no autocast region was open at the optimizer's steps "
                                             "(the script's autocast ends before them: no cache outlives a step)")
