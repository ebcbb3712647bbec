"""normalise_rows: `F.normalize` over the batch axis computed over the feature axis (tests not_normalised).

`F.normalize(x, dim=0)` on (B, E) embeddings scales each feature column to unit norm across the batch instead of
each embedding to unit length: the logits are no longer cosines, their scale depends on the batch, and the
temperature no longer means what it says. While the run lasts the script's calls (the watch's probes keep theirs)
of `torch.nn.functional.normalize` on a 2-d tensor along dim 0 (or -2) whose rows are the batch (as many as the
batch size given to the watch, any number when none was) are computed along the last axis instead. Not applicable:
no such call by the second `observe` (the script normalises correctly, by hand, or not at all).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, called_by_own_code


class NormaliseRows(Intervention):
    name = "normalise_rows"
    tests = ("not_normalised",)
    changes = "F.normalize called by the script along the batch axis (dim=0) of (B, E) embeddings done along dim=-1"

    def setup(self, watch: Any) -> None:
        import torch.nn.functional as F

        self._F, self._orig, self._moved = F, F.normalize, 0
        rows = getattr(watch, "batch_size", None)
        orig = self._orig

        def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
            if (isinstance(input, torch.Tensor) and input.dim() == 2 and dim in (0, -2)
                    and (not rows or input.shape[0] == rows) and not called_by_own_code()):
                self._moved += 1
                dim = -1
            return orig(input, p=p, dim=dim, eps=eps, out=out)

        F.normalize = normalize

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        self.require_acted_by_second_observe(self._moved, "the script made no F.normalize call along the batch axis "
                                             "of a (B, E) tensor in the first step")
        self.did[:] = [f"{self._moved} F.normalize call(s) along the batch axis done along the feature axis"]

    def close(self) -> None:
        self._F.normalize = self._orig
