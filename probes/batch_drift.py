"""Batch to batch: are a batch's rows copies of one vector, and is it the same vector in every batch?

Probe ``batch_drift``, target = embedding name (``image``, ``text``, ...), on the first `EARLY` observations:
  rows_cosine — mean off-diagonal cosine of the batch's rows (1: every row the same vector; the collapse
      probe's cosine_mean, read here on these steps whatever the probe preset);
  mean_cosine_prev — cosine between the batch's mean direction (the mean of its L2-normalised rows) and the
      previous observed batch's (from the second observation on).

Why: rows that are copies within a batch come either from the model (a tower that discards its input, a zero
projection: the same vector for every batch, cosine to the previous batch's ~1 since one optimizer step moves it
little) or from the data (every row of the batch is the same caption, e.g. a class-sorted dataset read without
shuffling: a different vector in each batch). The second is a batch of false negatives, not a collapse; the two
readings together tell them apart on the step's own tensors. The pipeline's order shows from the first batches,
so the probe stops after `EARLY` observations (cost: a few small ops on those steps, none later).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import Observation, Probe

if TYPE_CHECKING:
    from .session import ProbeSession

EARLY = 20


class BatchDrift(Probe):
    name = "batch_drift"

    def setup(self, session: "ProbeSession") -> None:
        self.seen = 0
        self._prev: dict[str, torch.Tensor] = {}

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        if self.seen >= EARLY or not obs.embeddings or not session.due(obs.step):
            return
        keys: list[tuple[str, str]] = []
        vals: list[torch.Tensor] = []
        with torch.no_grad():
            for label, x in obs.embeddings.items():
                if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() in (2, 3) and len(x) > 1):
                    continue
                x = x.detach().float()
                if x.dim() == 3:
                    x = x.mean(1)  # (B, T, D) -> (B, D), as the collapse probe pools
                u = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
                n = len(u)
                s = u.sum(0)
                keys.append((label, "rows_cosine"))
                vals.append((s @ s - (u.pow(2).sum(-1) > 0).sum()) / (n * (n - 1)))
                mean = s / torch.linalg.vector_norm(s).clamp_min(1e-12)
                prev = self._prev.get(label)
                if prev is not None and prev.shape == mean.shape:
                    keys.append((label, "mean_cosine_prev"))
                    vals.append(mean @ prev)
                self._prev[label] = mean
        self.seen += 1
        if keys:
            session.buffer.extend_values(obs.step, self.name, keys, vals)

    def coverage(self, session: "ProbeSession", records) -> dict:
        return {"batch_drift_observations": f"{self.seen} (the first {EARLY} measured observations with embeddings)"}
