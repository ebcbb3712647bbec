"""The contrastive step read directly: the logits' shape, where the targets point, how spread the
embeddings' norms are, and duplicates inside the batch, with one counterfactual on the step's own
tensors (the loss with the duplicates of each positive taken out of its negatives).

Probe ``contrastive`` (values stay on the device until the step's one transfer):
  target ``logits`` (the first logits matrix given to `observe`), every measured step:
      rows, cols (its shape: cols is the number of candidates each row is scored against),
      acc_diagonal (share of rows whose argmax is their own column i; when cols >= rows),
      loss_diagonal (symmetric cross-entropy with the positives on the diagonal; square logits only),
      loss_i2t / loss_t2i (its two directions), loss_zero_i2t / loss_zero_t2i (each direction with every
      target at column / row 0; square logits only),
      and with ``targets``: target_on_diagonal (share of targets equal to the row index),
      targets_distinct (distinct targets / rows), acc_target (argmax == target), loss_target
      (cross-entropy against the targets, rows only); with soft ``targets`` (one probability per logit):
      soft_target_entropy (mean row entropy / ln(candidates): 1 = every candidate equally likely) and
      soft_target_on_diagonal (share of rows whose most likely candidate is their own pair)
  target ``image`` / ``text``, every measured step: norm_cv (std / mean of the row norms),
      requires_grad (1 if the embedding carries a gradient back into the model, else 0)
  target ``model``, every measured step: frozen_numel (parameter values with requires_grad=False)
  target ``pairs``, every measured step with both embeddings (>= 8 rows): cka (linear CKA of the image
      and text embeddings as paired, rows L2-normalised and centred), cka_null (the same with the
      captions re-paired by a fixed derangement: the value of unrelated pairs)
  target ``image`` / ``text``, expensive steps: duplicate_share (rows with another row of the batch
      at cosine >= `DUPLICATE_COSINE`)
  target ``logits``, expensive steps: loss_duplicates_masked (the symmetric loss with every duplicate
      of a row's positive removed from its negatives), loss_diagonal_same_step (the unmasked loss
      on the same rows, for the comparison)
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .base import Observation, Probe

if TYPE_CHECKING:
    from .session import ProbeSession

# Two rows are duplicates when their L2-normalised embeddings agree to cosine 0.999 (an angle under
# 2.6 degrees): identical inputs give 1 up to float rounding (~1e-7), while distinct items in an
# embedding that is not collapsed sit far below it. Collapse makes everything look duplicate; the rule
# that reads this asks for spread-out embeddings first.
DUPLICATE_COSINE = 0.999
# Below 8 rows a CKA over the batch is dominated by its own small-sample bias.
PAIRS_MIN_ROWS = 8


def _cka(x: torch.Tensor, y: torch.Tensor, den: torch.Tensor | None = None) -> torch.Tensor:
    """Linear CKA of two column-centred matrices with the same rows (Kornblith et al. 2019); NaN when either
    has no spread left (all rows equal, e.g. zero embeddings): no structure can be read from it. `den` may be
    passed when known: it does not change when the rows of y are permuted."""
    den = (x.t() @ x).norm() * (y.t() @ y).norm() if den is None else den
    return torch.where(den > 1e-12, (x.t() @ y).pow(2).sum() / den.clamp_min(1e-12), torch.full_like(den, float("nan")))


@lru_cache(maxsize=16)
def _derangement(n: int, device: torch.device) -> torch.Tensor:
    """One random n-cycle (no row keeps its own caption), drawn once per size from a private generator: the
    user's random streams are never touched."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    cycle = torch.empty(n, dtype=torch.long)
    cycle[order] = order.roll(-1)
    return cycle.to(device)


class Contrastive(Probe):
    name = "contrastive"

    def setup(self, session: "ProbeSession") -> None:
        self.frozen = float(sum(p.numel() for p in session.model.parameters() if not p.requires_grad))

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        if not session.due(obs.step):
            return
        keys: list[tuple[str, str]] = [("model", "frozen_numel")]
        vals: list[torch.Tensor | float] = [self.frozen]
        logits = next(iter(obs.logits.values()), None) if obs.logits else None
        targets = getattr(obs, "targets", None)
        with torch.no_grad():
            if isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[0] > 0:
                self._logits(logits.detach().float(), targets, keys, vals)
            for name in ("image", "text"):
                x = obs.embeddings.get(name)
                if isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[0] > 1:
                    norms = x.detach().float().norm(dim=-1)
                    keys += [(name, "norm_cv"), (name, "requires_grad")]
                    vals += [norms.std() / norms.mean().clamp_min(1e-12), float(x.requires_grad)]
            self._pairs(obs, keys, vals)
            if session.due(obs.step, expensive=True):
                self._duplicates(obs, logits, keys, vals)
        session.buffer.extend_values(obs.step, self.name, keys, vals)

    @staticmethod
    def _logits(z: torch.Tensor, targets, keys: list, vals: list) -> None:
        b, c = z.shape
        keys += [("logits", "rows"), ("logits", "cols")]
        vals += [float(b), float(c)]
        pred = z.argmax(dim=1)
        diag = torch.arange(b, device=z.device)
        if c >= b:
            keys.append(("logits", "acc_diagonal"))
            vals.append((pred == diag).float().mean())
        if c == b:
            # each direction against the diagonal and against column 0 (MoCo's "the positive is column 0",
            # ported to an in-batch matrix): which of them the reported loss equals says where its targets point
            lse_r, lse_c = z.logsumexp(dim=1), z.logsumexp(dim=0)
            i2t, t2i = (lse_r - z.diagonal()).mean(), (lse_c - z.diagonal()).mean()
            keys += [("logits", "loss_diagonal"), ("logits", "loss_i2t"), ("logits", "loss_t2i"),
                     ("logits", "loss_zero_i2t"), ("logits", "loss_zero_t2i")]
            vals += [0.5 * (i2t + t2i), i2t, t2i, (lse_r - z[:, 0]).mean(), (lse_c - z[0, :]).mean()]
        given = isinstance(targets, torch.Tensor) and targets.dim() == 1 and len(targets) == b
        if given and not targets.is_floating_point():
            t = targets.detach().to(z.device).long()
            valid = ((t >= 0) & (t < c)).all()
            # distinct targets counted on the device (sorted, then the steps between neighbours): no host sync
            st = t.sort().values
            distinct = 1.0 + (st[1:] != st[:-1]).float().sum()
            keys += [("logits", "target_on_diagonal"), ("logits", "targets_distinct"), ("logits", "acc_target"),
                     ("logits", "loss_target")]
            # targets outside the columns give NaN, never a loss (clamped only so cross_entropy can run)
            loss_t = F.cross_entropy(z, t.clamp(0, c - 1))
            vals += [(t == diag).float().mean(), distinct / b, (pred == t).float().mean(),
                     torch.where(valid, loss_t, torch.full_like(loss_t, float("nan")))]
        elif isinstance(targets, torch.Tensor) and targets.dim() == 2 and targets.shape == z.shape and c > 1:
            # soft targets (a probability per candidate): how far each row's target is from uniform, and whether
            # its most likely candidate is the row's own pair
            t = targets.detach().to(z.device).float()
            p = t / t.sum(dim=1, keepdim=True).clamp_min(1e-30)
            entropy = -(p * p.clamp_min(1e-30).log()).sum(dim=1) / math.log(c)
            keys += [("logits", "soft_target_entropy"), ("logits", "soft_target_on_diagonal")]
            vals += [entropy.mean(), (p.argmax(dim=1) == diag).float().mean() if c >= b else float("nan")]

    @staticmethod
    def _pairs(obs: Observation, keys: list, vals: list) -> None:
        """Linear CKA of the batch's image and text embeddings as paired, and with the captions re-paired by
        a fixed derangement: matching pairs share structure (items alike in one tower are alike in the
        other) even through random towers; mismatched pairs share none beyond the null's."""
        x, y = obs.embeddings.get("image"), obs.embeddings.get("text")
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dim() == 2 and y.dim() == 2
                and len(x) == len(y) and len(x) >= PAIRS_MIN_ROWS):
            return
        x, y = (F.normalize(t.detach().float(), dim=-1) for t in (x, y))
        x, y = x - x.mean(0), y - y.mean(0)
        keys += [("pairs", "cka"), ("pairs", "cka_null")]
        den = (x.t() @ x).norm() * (y.t() @ y).norm()  # the same for any row order of y
        vals += [_cka(x, y, den), _cka(x, y[_derangement(len(x), y.device)], den)]

    @staticmethod
    def _duplicates(obs: Observation, logits, keys: list, vals: list) -> None:
        dup: dict[str, torch.Tensor] = {}
        for name in ("image", "text"):
            x = obs.embeddings.get(name)
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 2:
                continue
            u = F.normalize(x.detach().float(), dim=-1)
            same = (u @ u.t()) >= DUPLICATE_COSINE
            same.fill_diagonal_(False)
            dup[name] = same
            keys.append((name, "duplicate_share"))
            vals.append(same.any(dim=1).float().mean())
        if not (isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[0] == logits.shape[1]):
            return
        z = logits.detach().float()
        masks = [m for m in dup.values() if m.shape[0] == z.shape[0]]
        if not masks:
            return
        # a duplicate caption (or image) of pair i matches i too, in both directions: it is a false
        # negative for image i's row and for caption i's row alike (the masks are symmetric)
        same = masks[0] if len(masks) == 1 else masks[0] | masks[1]
        diag = torch.arange(z.shape[0], device=z.device)
        masked_i2t = z.masked_fill(same, float("-inf"))
        masked_t2i = z.t().masked_fill(same, float("-inf"))
        keys += [("logits", "loss_duplicates_masked"), ("logits", "loss_diagonal_same_step")]
        vals += [0.5 * (F.cross_entropy(masked_i2t, diag) + F.cross_entropy(masked_t2i, diag)),
                 0.5 * (F.cross_entropy(z, diag) + F.cross_entropy(z.t(), diag))]
