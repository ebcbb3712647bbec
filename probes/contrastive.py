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
  target ``image`` / ``text``, every measured step where the embedding is a concatenation along rows of k >= 2
      tensors of equal rows (features gathered from k ranks and joined with `torch.cat`): gather_shards (k) and
      gather_shards_with_grad (how many of them carry a gradient back: `dist.all_gather` fills buffers outside
      autograd, so only a shard put back by hand does; `torch.distributed.nn.all_gather` keeps all of them)
  target ``model``, every measured step: frozen_numel (parameter values with requires_grad=False)
  target ``pairs``, every measured step with both embeddings (>= 8 rows): cka (linear CKA of the image
      and text embeddings as paired, rows L2-normalised and centred), cka_null (the same with the
      captions re-paired by a fixed derangement: the value of unrelated pairs)
  target ``image`` / ``text``, expensive steps: duplicate_share (rows with another row of the batch
      at cosine >= `DUPLICATE_COSINE`), loss_floor_duplicates (mean over rows of ln(1 + k), k the row's copies:
      the least loss the batch allows, whatever the model learns, where copies score alike), cosine_distinct (mean
      cosine of the pairs that are not copies: under 0.95 the tower tells distinct inputs apart), and with square
      logits loss_duplicates_masked (the symmetric loss with only this side's duplicates removed from the
      negatives: what its copies alone cost)
  target ``logits``, expensive steps: loss_duplicates_masked (the symmetric loss with every duplicate
      of a row's positive removed from its negatives), loss_diagonal_same_step (the unmasked loss
      on the same rows, for the comparison); with image and text embeddings of the logits' rows:
      loss_cosine_best_scale (the symmetric loss of the same embeddings as cosines, rows L2-normalised,
      at the best of the scales 1 to 64: what the step's directions alone would give) and
      loss_best_scale_same_step (the logits as given at their best sharper scale, the same grid of factors:
      the two differ by what the rows' norms do to the ranking, not by the temperature)
  target ``logits``, expensive steps, logits with more columns than rows (gathered or extra candidates, which
      the embeddings given do not cover): twin_share (rows whose positive column, the target or column i, has
      an identical twin among the other columns: the same candidate twice, e.g. two ranks that drew the same
      batch), loss_twins_masked (the rows' cross-entropy with those twins taken out of the negatives) and
      loss_target_same_step (the same rows unmasked); with integer ``targets`` and image and text embeddings of
      the logits' rows: pairs_located (share of the text rows whose own scores against the images, image @ text.T,
      match a logits column to correlation >= `PAIR_COLUMN_CORR`: where each pair's caption sits among the
      candidates) and target_at_pair (share of the located rows whose target is that column)
  target ``logits``, expensive steps, logits with at least as many columns as rows: the loss split at the group
      of candidates each row narrowed to (its columns above the uniform 1/C): group_share (mean group size / C),
      group_mass (mean probability on the group), target_in_group (share of rows whose target is in it), and on
      those rows loss_in_group (-log of the target's share of its group's mass) against ln_group (mean ln |group|:
      the target no more likely than any other member)

Batched over steps: on the usual step (square logits, no targets, image and text embeddings of one shape with
8 <= rows <= features) the tensor readings of every step (acc_diagonal, the five losses, norm_cv, cka,
cka_null) are computed for `BATCH_STEPS` steps at once, on the steps' own tensors stacked: the same values,
each stamped with its own step, for an eighth of the per-step tensor ops (each a fixed cost on small tensors).
They reach the records up to BATCH_STEPS - 1 steps late (the online rules see them then; `records` and `close`
take the held steps first); the shape, frozen_numel and requires_grad rows come at once. Nothing is sampled.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ._records import Columns
from .base import Observation, Probe
from .stats import best_scale_cross_entropy

if TYPE_CHECKING:
    from .session import ProbeSession

# Two rows are duplicates when their L2-normalised embeddings agree to cosine 0.999 (an angle under
# 2.6 degrees): identical inputs give 1 up to float rounding (~1e-7), while distinct items in an
# embedding that is not collapsed sit far below it. Collapse makes everything look duplicate; the rule
# that reads this asks for spread-out embeddings first.
DUPLICATE_COSINE = 0.999
# A logits column is a pair's own caption when it correlates with that caption's scores image @ text.T to
# float rounding of a scale and a bias (distinct captions of a spread-out batch stay far below).
PAIR_COLUMN_CORR = 0.999
# Largest rectangular logits the twin-column reading looks at: its (2, rows, cols) comparison is 32 MB in float32.
TWINS_MAX = 1 << 22
# Below 8 rows a CKA over the batch is dominated by its own small-sample bias.
PAIRS_MIN_ROWS = 8
# Steps whose every-step readings are computed together (module docstring): the per-step cost falls with it, the
# readings' delay grows with it; the held tensors are a batch's logits and embeddings, small next to a step's.
BATCH_STEPS = 8


def _cka(x: torch.Tensor, y: torch.Tensor, den: torch.Tensor | None = None) -> torch.Tensor:
    """Linear CKA of two column-centred matrices with the same rows (Kornblith et al. 2019); NaN when either
    has no spread left (all rows equal, e.g. zero embeddings): no structure can be read from it. `den` may be
    passed when known: it does not change when the rows of y are permuted."""
    den = (x.t() @ x).norm() * (y.t() @ y).norm() if den is None else den
    return torch.where(den > 1e-12, (x.t() @ y).pow(2).sum() / den.clamp_min(1e-12), torch.full_like(den, float("nan")))


def _cka_pair(u: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """`_cka(x, y)` and `_cka(x, y[perm])` as one (2,) tensor, for u = stack([x, y]) (2, b, d) column-centred, from
    the rows' Gram matrices (b x b) instead of the features' (d x d): ||XᵀY||² = <XXᵀ, YYᵀ> and ||XᵀX|| = ||XXᵀ||
    (Frobenius), the same CKA (equal up to float rounding, ~1e-6 relative) at b²d operations instead of bd², the
    cheaper form when a batch has fewer rows than features. Re-pairing permutes the rows and columns of YYᵀ."""
    k = u @ u.transpose(1, 2)  # XXᵀ and YYᵀ
    den = k.norm(dim=(1, 2)).prod()  # the same for any row order of y
    ky = k[1]
    num = (k[0] * torch.stack([ky, ky[perm[:, None], perm]])).sum(dim=(1, 2))
    return num / torch.where(den > 1e-12, den, float("nan"))  # NaN where either has no spread left, as `_cka`


@lru_cache(maxsize=16)
def _arange(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


def gathered_shards(emb: dict[str, torch.Tensor]) -> list[tuple[str, str, float]]:
    """Per embedding made by `torch.cat` along its rows of k >= 2 inputs with equal rows (the step's own autograd
    node, read without running it): (name, gather_shards, k) and (name, gather_shards_with_grad, the inputs with a
    gradient path). Nothing for any other embedding."""
    out = []
    for name, x in emb.items():
        fn = x.grad_fn
        if fn is None or type(fn).__name__ != "CatBackward0" or getattr(fn, "_saved_dim", None) not in (0, -x.dim()):
            continue
        k = len(fn.next_functions)
        if k < 2 or x.shape[0] % k:
            continue
        out += [(name, "gather_shards", float(k)),
                (name, "gather_shards_with_grad", float(sum(f is not None for f, _ in fn.next_functions)))]
    return out


class _Readings:
    """One observation's rows: (target, metric) keys with python numbers, or with tensors on the device (0-d, or
    1-d with one value per key). `emit` joins the tensors into one per (device, dtype) with one `torch.cat`, so the
    step's one host transfer copies one tensor, not one per reading (the numbers' rows first, then the tensors')."""

    def __init__(self) -> None:
        self.numbers: list[tuple[str, str, float]] = []
        self.tensors: list[tuple[list[tuple[str, str]], torch.Tensor]] = []

    def add(self, target: str, metric: str | tuple[str, ...], value: torch.Tensor | float,
            targets: tuple[str, ...] | None = None) -> None:
        """One reading, or a 1-d tensor of one per metric (or per target of `targets`, all with `metric`)."""
        if not isinstance(value, torch.Tensor):
            self.numbers.append((target, metric, float(value)))
        elif targets is not None:
            self.tensors.append(([(t, metric) for t in targets], value))
        elif isinstance(metric, tuple):
            self.tensors.append(([(target, m) for m in metric], value))
        else:
            self.tensors.append(([(target, metric)], value))

    def emit(self, session: "ProbeSession", step: int, probe: str) -> None:
        groups: dict[tuple, list[tuple[list[tuple[str, str]], torch.Tensor]]] = {}
        for keys, t in self.tensors:
            groups.setdefault((t.device, t.dtype), []).append((keys, t))
        keys = [(t, m) for t, m, _ in self.numbers]
        values: list[torch.Tensor | float] = [v for _, _, v in self.numbers]
        for items in groups.values():
            keys += [k for ks, _ in items for k in ks]
            parts = [t if t.dim() == 1 else t.reshape(1) for _, t in items]
            values.append(parts[0] if len(parts) == 1 else torch.cat(parts))
        session.buffer.extend_values(step, probe, keys, values)


@lru_cache(maxsize=16)
def _derangement(n: int, device: torch.device) -> torch.Tensor:
    """One random n-cycle (no row keeps its own caption), drawn once per size from a private generator: the
    user's random streams are never touched."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    cycle = torch.empty(n, dtype=torch.long)
    cycle[order] = order.roll(-1)
    if device.type == "cuda":  # from pinned memory without blocking: a pageable copy would wait for the device
        return cycle.pin_memory().to(device, non_blocking=True)
    return cycle.to(device)


STEP_METRICS = (("logits", "acc_diagonal"), ("logits", "loss_diagonal"), ("logits", "loss_i2t"),
                ("logits", "loss_t2i"), ("logits", "loss_zero_i2t"), ("logits", "loss_zero_t2i"),
                ("image", "norm_cv"), ("text", "norm_cv"), ("pairs", "cka"), ("pairs", "cka_null"))


def _step_readings(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """The every-step tensor readings (`STEP_METRICS`, in that order) of K steps at once: z (K, b, b) logits,
    e (K, 2, b, d) image and text embeddings; (K, 10). Each op works on every step's slice as the single-step
    computation (`Contrastive._logits`, `Contrastive._embeddings`) works on one step's tensors."""
    b = z.shape[1]
    acc = (z.argmax(dim=2) == _arange(b, z.device)).sum(1, keepdim=True) / b
    lse_r, lse_c, d = z.logsumexp(dim=2), z.logsumexp(dim=1), z.diagonal(dim1=1, dim2=2)
    m = (torch.stack([lse_r, lse_c, lse_r, lse_c], 1) - torch.stack([d, d, z[:, :, 0], z[:, 0]], 1)).mean(dim=2)
    n = e.norm(dim=-1)  # (K, 2, b)
    cv = n.std(dim=2) / n.mean(dim=2).clamp_min(1e-12)
    u = e / n.clamp_min(1e-12).unsqueeze(-1)
    u = u - u.mean(dim=2, keepdim=True)
    g = u @ u.transpose(2, 3)  # (K, 2, b, b): XXᵀ and YYᵀ of every step (see `_cka_pair`)
    den = g.norm(dim=(2, 3)).prod(1, keepdim=True)
    perm = _derangement(b, z.device)
    gy = g[:, 1]
    num = (g[:, :1] * torch.stack([gy, gy[:, perm[:, None], perm]], 1)).sum(dim=(2, 3))
    cka = num / torch.where(den > 1e-12, den, float("nan"))
    return torch.cat([acc, m[:, :2].sum(1, keepdim=True) * 0.5, m, cv, cka], dim=1)


def _batchable(logits, targets, emb: dict[str, torch.Tensor]) -> bool:
    """Square float logits with no targets, and image and text embeddings of one shape with PAIRS_MIN_ROWS <= rows
    <= features and as many rows as the logits (the readings `_step_readings` computes)."""
    x, y = emb.get("image"), emb.get("text")
    return (targets is None and isinstance(logits, torch.Tensor) and logits.dim() == 2
            and logits.is_floating_point() and logits.shape[0] == logits.shape[1] and x is not None and y is not None
            and x.shape == y.shape and x.dtype == y.dtype and x.device == y.device == logits.device
            and x.is_floating_point() and PAIRS_MIN_ROWS <= len(x) == len(logits) <= x.shape[1])


class Contrastive(Probe):
    name = "contrastive"

    def setup(self, session: "ProbeSession") -> None:
        self.frozen = float(sum(p.numel() for p in session.model.parameters() if not p.requires_grad))
        self._held: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (step, logits, image, text)

    def close(self, session: "ProbeSession") -> None:
        self.drain(session)

    def drain(self, session: "ProbeSession") -> None:
        """The held steps' readings, computed now (their values wait for the next flush like any other)."""
        held, self._held = getattr(self, "_held", []), []
        if not held:
            return
        steps = [s for s, _, _, _ in held]
        with torch.no_grad():
            z = torch.stack([z for _, z, _, _ in held]).float()
            e = torch.stack([t for _, _, x, y in held for t in (x, y)]).float()
            values = _step_readings(z, e.reshape(len(held), 2, *e.shape[1:]))
        targets, metrics = [t for t, _ in STEP_METRICS], [m for _, m in STEP_METRICS]

        def finish(floats: list[float]) -> Columns:
            w = len(STEP_METRICS)
            for i, step in enumerate(steps[:-1]):  # the last step's rows are returned, stamped by `later`
                session.buffer.extend_columns(step, self.name, Columns(targets, metrics, floats[i * w:(i + 1) * w]))
            return Columns(targets, metrics, floats[-w:])

        session.buffer.later(steps[-1], self.name, [values], finish)

    def _hold(self, session: "ProbeSession", step: int, z: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
        if self._held:
            _, z0, x0, _ = self._held[0]
            if (z.shape, z.dtype, z.device, x.shape, x.dtype) != (z0.shape, z0.dtype, z0.device, x0.shape, x0.dtype):
                self.drain(session)
        self._held.append((step, z.detach(), x.detach(), y.detach()))
        if len(self._held) >= BATCH_STEPS:
            self.drain(session)

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        if not session.due(obs.step):
            return
        r = _Readings()
        r.add("model", "frozen_numel", self.frozen)
        logits = next(iter(obs.logits.values()), None) if obs.logits else None
        targets = getattr(obs, "targets", None)
        emb = {name: x for name in ("image", "text")
               if isinstance(x := obs.embeddings.get(name), torch.Tensor) and x.dim() == 2 and x.shape[0] > 1}
        if _batchable(logits, targets, emb):  # the usual step: its tensor readings with the next held steps'
            b, x = logits.shape[0], emb["image"]
            r.numbers += [("logits", "rows", float(b)), ("logits", "cols", float(b)),
                          ("image", "requires_grad", float(x.requires_grad)),
                          ("text", "requires_grad", float(emb["text"].requires_grad))]
            r.numbers += gathered_shards(emb)
            self._hold(session, obs.step, logits, x, emb["text"])
            if session.due(obs.step, expensive=True):
                with torch.no_grad():
                    self._duplicates(obs, logits, r)
                    self._as_cosines(emb, logits, r)
                    self._within_group(logits, None, r)
            r.emit(session, obs.step, self.name)
            return
        self.drain(session)  # steps held so far first, so each step's rows come in step order
        with torch.no_grad():  # nothing computed here records a graph: the user's tensors are read without detach
            if isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[0] > 0:
                self._logits(logits.float(), targets, r)
            self._embeddings(emb, r)
            if session.due(obs.step, expensive=True):
                self._duplicates(obs, logits, r)
                self._as_cosines(emb, logits, r)
                self._twins(logits, targets, r)
                self._pairs_in_columns(emb, logits, targets, r)
                self._within_group(logits, targets, r)
        r.emit(session, obs.step, self.name)

    @staticmethod
    def _logits(z: torch.Tensor, targets, r: _Readings) -> None:
        b, c = z.shape
        r.add("logits", "rows", b)
        r.add("logits", "cols", c)
        pred = z.argmax(dim=1)
        diag = _arange(b, z.device)
        if c >= b:  # share of rows whose argmax is their own column (a count of 0/1 over b: exact as the mean)
            r.add("logits", "acc_diagonal", (pred == diag).sum(0, keepdim=True) / b)
        if c == b:
            # each direction against the diagonal and against column 0 (MoCo's "the positive is column 0",
            # ported to an in-batch matrix): which of them the reported loss equals says where its targets point
            lse_r, lse_c, d = z.logsumexp(dim=1), z.logsumexp(dim=0), z.diagonal()
            m = (torch.stack([lse_r, lse_c, lse_r, lse_c]) - torch.stack([d, d, z[:, 0], z[0]])).mean(dim=1)
            r.add("logits", "loss_diagonal", m[:2].sum(0, keepdim=True) * 0.5)  # (i2t + t2i) / 2
            r.add("logits", ("loss_i2t", "loss_t2i", "loss_zero_i2t", "loss_zero_t2i"), m)
        given = isinstance(targets, torch.Tensor) and targets.dim() == 1 and len(targets) == b
        if given and not targets.is_floating_point():
            t = targets.detach().to(z.device).long()
            valid = ((t >= 0) & (t < c)).all()
            # distinct targets counted on the device (sorted, then the steps between neighbours): no host sync
            st = t.sort().values
            distinct = 1.0 + (st[1:] != st[:-1]).float().sum()
            # targets outside the columns give NaN, never a loss (clamped only so cross_entropy can run)
            loss_t = F.cross_entropy(z, t.clamp(0, c - 1))
            r.add("logits", "target_on_diagonal", (t == diag).float().mean())
            r.add("logits", "targets_distinct", distinct / b)
            r.add("logits", "acc_target", (pred == t).float().mean())
            r.add("logits", "loss_target", torch.where(valid, loss_t, torch.full_like(loss_t, float("nan"))))
        elif isinstance(targets, torch.Tensor) and targets.dim() == 2 and targets.shape == z.shape and c > 1:
            # soft targets (a probability per candidate): how far each row's target is from uniform, and whether
            # its most likely candidate is the row's own pair
            t = targets.detach().to(z.device).float()
            p = t / t.sum(dim=1, keepdim=True).clamp_min(1e-30)
            entropy = -(p * p.clamp_min(1e-30).log()).sum(dim=1) / math.log(c)
            r.add("logits", "soft_target_entropy", entropy.mean())
            r.add("logits", "soft_target_on_diagonal", (p.argmax(dim=1) == diag).float().mean() if c >= b else math.nan)

    @staticmethod
    def _embeddings(emb: dict[str, torch.Tensor], r: _Readings) -> None:
        """norm_cv and requires_grad of each embedding, and the pair reading: linear CKA of the batch's image and
        text embeddings as paired, and with the captions re-paired by a fixed derangement: matching pairs share
        structure (items alike in one tower are alike in the other) even through random towers; mismatched pairs
        share none beyond the null's. Both towers go through each op together when their shapes agree."""
        for name, x in emb.items():
            r.add(name, "requires_grad", float(x.requires_grad))
        r.numbers += gathered_shards(emb)
        x, y = emb.get("image"), emb.get("text")
        paired = x is not None and y is not None and len(x) == len(y) and len(x) >= PAIRS_MIN_ROWS
        if paired and x.shape == y.shape and x.dtype == y.dtype and x.device == y.device and len(x) <= x.shape[1]:
            e = torch.stack([x, y]).float()
            n = e.norm(dim=-1)
            r.add("", "norm_cv", n.std(dim=1) / n.mean(dim=1).clamp_min(1e-12), targets=("image", "text"))
            u = e / n.clamp_min(1e-12).unsqueeze(-1)  # rows L2-normalised as F.normalize does
            u = u - u.mean(dim=1, keepdim=True)
            r.add("pairs", ("cka", "cka_null"), _cka_pair(u, _derangement(len(x), x.device)))
            return
        for name, t in emb.items():
            n = t.float().norm(dim=-1)
            r.add(name, "norm_cv", n.std() / n.mean().clamp_min(1e-12))
        if paired:  # more rows than features (or towers of different widths): the features' Gram matrices
            x, y = (F.normalize(t.float(), dim=-1) for t in (x, y))
            x, y = x - x.mean(0), y - y.mean(0)
            den = (x.t() @ x).norm() * (y.t() @ y).norm()  # the same for any row order of y
            r.add("pairs", "cka", _cka(x, y, den))
            r.add("pairs", "cka_null", _cka(x, y[_derangement(len(x), y.device)], den))

    @staticmethod
    def _as_cosines(emb: dict[str, torch.Tensor], logits, r: _Readings) -> None:
        """The counterfactual of normalisation on the step's own embeddings: their cosines at the best scale (the
        grid of `stats.best_scale_cross_entropy` from 1x), both directions; only where the logits are the
        B x B scores of these rows (gathered or extra candidates are not in the embeddings)."""
        x, y = emb.get("image"), emb.get("text")
        if not (x is not None and y is not None and isinstance(logits, torch.Tensor) and logits.dim() == 2
                and logits.shape[0] == logits.shape[1] == len(x) == len(y) and x.shape[1] == y.shape[1]):
            return
        cos = F.normalize(x.float(), dim=-1) @ F.normalize(y.float(), dim=-1).t()
        z = logits.float()
        _, best, _ = best_scale_cross_entropy(torch.stack([cos, cos.t(), z, z.t()]))
        r.add("logits", ("loss_cosine_best_scale", "loss_best_scale_same_step"), best.view(2, 2).mean(1))

    @staticmethod
    def _pairs_in_columns(emb: dict[str, torch.Tensor], logits, targets, r: _Readings) -> None:
        """Where each pair's caption sits among the candidates of rectangular logits (a queue, a bank of earlier
        captions, gathered ranks): caption k's scores against the batch's images are a column of image @ text.T,
        and the logits column that correlates with it (a temperature or a bias changes neither) is k's column."""
        x, y = emb.get("image"), emb.get("text")
        if not (isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[1] > logits.shape[0]
                and x is not None and y is not None and len(x) == len(y) == logits.shape[0] >= PAIRS_MIN_ROWS
                and x.shape[1] == y.shape[1] and logits.numel() * len(x) <= TWINS_MAX
                and isinstance(targets, torch.Tensor) and targets.shape == (len(x),)
                and not targets.is_floating_point()):
            return

        def unit_columns(m: torch.Tensor) -> torch.Tensor:
            m = m - m.mean(dim=0, keepdim=True)
            return m / m.norm(dim=0, keepdim=True).clamp_min(1e-12)

        own = x.float() @ y.float().t()  # (B, B): column k = caption k against every image of the batch
        corr = unit_columns(logits.float()).t() @ unit_columns(own)  # (C, B)
        best, col = corr.max(dim=0)
        located = best >= PAIR_COLUMN_CORR
        hit = (targets.to(col.device).long() == col) & located
        r.add("logits", ("pairs_located", "target_at_pair"),
              torch.stack([located.float().mean(), hit.float().sum() / located.float().sum().clamp_min(1.0)]))

    @staticmethod
    def _within_group(logits, targets, r: _Readings) -> None:
        """The loss split at the group of candidates each row narrowed to (those above 1/C, the uniform share):
        -log p_target = -log(mass on the group) + -log(p_target / mass on the group). The first part is what the
        model learned about which candidates are in play; the second, against ln |group|, whether the target
        stands out inside them. Read on the rows whose target is in their group; both directions of square
        logits (the targets: integer ones given, else the diagonal)."""
        if not (isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.is_floating_point()
                and logits.shape[1] >= logits.shape[0] > 1):
            return
        z = logits.detach().float()
        b, c = z.shape
        t = _arange(b, z.device)
        if isinstance(targets, torch.Tensor) and targets.shape == (b,) and not targets.is_floating_point():
            t = targets.detach().to(z.device).long().clamp(0, c - 1)
        elif targets is not None:
            return
        zs, ts = [z], [t]
        if b == c and (targets is None or bool((t == _arange(b, z.device)).all())):
            zs, ts = [z, z.t()], [t, t]
        logp = torch.cat([x.log_softmax(dim=1) for x in zs])
        t = torch.cat(ts)
        group = logp >= -math.log(c)
        size = group.sum(dim=1).clamp_min(1)
        mass = logp.masked_fill(~group, float("-inf")).logsumexp(dim=1)
        lt = logp.gather(1, t[:, None]).squeeze(1)
        inside = group.gather(1, t[:, None]).squeeze(1).float()
        n = inside.sum().clamp_min(1.0)
        r.add("logits", ("group_share", "group_mass", "target_in_group", "loss_in_group", "ln_group"),
              torch.stack([(size / c).mean(), mass.exp().mean(), inside.mean(), ((mass - lt) * inside).sum() / n,
                           (size.float().log() * inside).sum() / n]))

    @staticmethod
    def _twins(logits, targets, r: _Readings) -> None:
        """Columns identical to a row's positive column, found by two fixed projections of each column over the
        rows (identical columns project identically; distinct real-valued ones coincide with probability 0), then
        the counterfactual of masking them. Rectangular logits only: square ones are read through the embeddings
        (`_duplicates`)."""
        if not (isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[1] > logits.shape[0] > 1
                and logits.numel() <= TWINS_MAX):
            return
        z = logits.detach().float()
        b, c = z.shape
        t = _arange(b, z.device)
        if isinstance(targets, torch.Tensor) and targets.dim() == 1 and len(targets) == b and not \
                targets.is_floating_point():
            t = targets.detach().to(z.device).long().clamp(0, c - 1)
        w = torch.stack([torch.linspace(1.0, 2.0, b, device=z.device), torch.cos(1.7 * _arange(b, z.device))])
        sig = w @ z  # (2, c)
        tol = 1e-5 * (z.abs().amax() * b + 1e-30)
        twin = ((sig[:, None, :] - sig[:, t, None]).abs() <= tol).all(dim=0)  # (b, c): column j twins row i's positive
        twin[_arange(b, z.device), t] = False
        r.add("logits", "twin_share", twin.any(dim=1).float().mean())
        r.add("logits", ("loss_twins_masked", "loss_target_same_step"),
              torch.stack([F.cross_entropy(z.masked_fill(twin, float("-inf")), t), F.cross_entropy(z, t)]))

    @staticmethod
    def _duplicates(obs: Observation, logits, r: _Readings) -> None:
        dup: dict[str, torch.Tensor] = {}
        for name in ("image", "text"):
            x = obs.embeddings.get(name)
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 2:
                continue
            u = F.normalize(x.detach().float(), dim=-1)
            sim = u @ u.t()
            same = sim >= DUPLICATE_COSINE
            same.fill_diagonal_(False)
            dup[name] = same
            copies = same.sum(dim=1).float()
            apart = ~same
            apart.fill_diagonal_(False)
            # a row's positive and its k copies score alike in every row (identical columns), and k + 1 identical
            # rows share their targets' mass: either way a row's loss is at least ln(1 + k) on average; the pairs
            # that are not copies say whether the tower tells distinct inputs apart (then the copies are the data's)
            r.add(name, ("duplicate_share", "loss_floor_duplicates", "cosine_distinct"),
                  torch.stack([(copies > 0).float().mean(), torch.log1p(copies).mean(),
                               sim[apart].mean() if bool(apart.any()) else sim.new_tensor(math.nan)]))
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
        if len(masks) == 2:  # each side's copies alone (one side's rows can coincide while the other's are apart)
            for name, m in dup.items():
                r.add(name, "loss_duplicates_masked",
                      0.5 * (F.cross_entropy(z.masked_fill(m, float("-inf")), diag)
                             + F.cross_entropy(z.t().masked_fill(m, float("-inf")), diag)))
        masked_i2t = z.masked_fill(same, float("-inf"))
        masked_t2i = z.t().masked_fill(same, float("-inf"))
        r.add("logits", "loss_duplicates_masked",
              0.5 * (F.cross_entropy(masked_i2t, diag) + F.cross_entropy(masked_t2i, diag)))
        r.add("logits", "loss_diagonal_same_step", 0.5 * (F.cross_entropy(z, diag) + F.cross_entropy(z.t(), diag)))
