"""The pairs at the first observation: a permutation test of the image and text embeddings' shared structure
before any optimizer step could change it.

Probe ``pairs_first``, target ``pairs``, once (the first observation with both embeddings, >= 8 rows):
  cka (linear CKA of the L2-normalised, centred image and text embeddings as paired), null_mean and null_sd
  (the same with the captions re-paired by `NULL_DRAWS` random permutations from a private generator), z
  ((cka - null_mean) / null_sd).

Why the first step: matching pairs share structure even through random towers, and no learning rate has acted
yet, so a collapse that a too-high lr causes later cannot erase it; `probes.contrastive` reads the margin on
every step against one re-pairing, which the rules can only use on steps whose embeddings are spread out.
Power: random towers carry more or less of the inputs' structure (the first-step z of 42 healthy runs of the
benchmark: 8-74 with MLP/resampler towers, 0.7-8 with ViT towers), so the reading says little on its own; the
rule uses it only where no spread-out step exists and the run stays at chance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .base import Observation, Probe

if TYPE_CHECKING:
    from .session import ProbeSession

NULL_DRAWS = 64  # re-pairings: the null's mean and sd to a few percent, once per run
MIN_ROWS = 8


class PairsFirst(Probe):
    name = "pairs_first"

    def setup(self, session: "ProbeSession") -> None:
        self.done = False

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        if self.done:
            return
        x, y = obs.embeddings.get("image"), obs.embeddings.get("text")
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dim() == 2 and y.dim() == 2
                and len(x) == len(y) and len(x) >= MIN_ROWS):
            return
        self.done = True
        with torch.no_grad():
            x, y = (F.normalize(t.detach().float(), dim=-1) for t in (x, y))
            x, y = x - x.mean(0), y - y.mean(0)
            den = ((x.t() @ x).norm() * (y.t() @ y).norm()).clamp_min(1e-30)
            g = torch.Generator().manual_seed(len(x))
            perms = torch.stack([torch.randperm(len(x), generator=g) for _ in range(NULL_DRAWS)]).to(y.device)
            paired = (x.t() @ y).pow(2).sum() / den
            # every re-pairing in one batched product: (K, D, D) cross-covariances
            nulls = torch.einsum("nd,kne->kde", x, y[perms]).pow(2).sum((1, 2)) / den
            mean, sd = nulls.mean(), nulls.std()
            z = (paired - mean) / sd.clamp_min(1e-12)
        session.buffer.extend_values(obs.step, self.name, [("pairs", "cka"), ("pairs", "null_mean"),
                                                           ("pairs", "null_sd"), ("pairs", "z")],
                                     [paired, mean, sd, z])
