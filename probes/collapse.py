"""Representation collapse of embeddings passed to `observe` and of watched module outputs.

Probe ``collapse``, target = embedding name (``image``, ``text``, ``input``, …) or the watch name:
  every step (cheap): n, dim, norm_mean, cosine_mean (mean off-diagonal cosine; 1 = all rows point
      the same way), dim_std_mean (mean per-dimension std of L2-normalised rows; ≈1/√D spread,
      → 0 collapsed), nonfinite_rows, column_norm_dev (embeddings passed to observe: the largest
      |norm - 1| of a column across the batch; ~0 when normalised over the batch axis, dim=0)
  expensive: effective_rank (RankMe), effective_rank_frac (/ min(N, D)), top_sv_share (energy of
      the top singular direction: ≈1 when one direction dominates, e.g. a shared component in the
      inputs), uniformity (Wang & Isola, t=2)
  target ``image~text``: alignment (E‖x̂−ŷ‖² over positive pairs = 2 - 2 cos) and negative_cosine
      (mean cosine over the non-matching pairs i != j), when both are given.
Batched over steps: on a cheap step whose embeddings are all 2-d float tensors of one shape (>= 2 rows), the
every-step readings above are computed for `BATCH_STEPS` steps at once on the steps' own stacked embeddings
(`contrastive.BATCH_STEPS`): the same values (each op reduces in the order of the one-step computation: equal
bits on CPU), each stamped with its own step, for an eighth of the per-step tensor ops. They reach the records
up to BATCH_STEPS - 1 steps late (`records` and `close` compute the held steps first); an expensive step
computes its own at once.
Watched outputs (``outputs={"name": "module.path"}`` or `ProbeSession.watch_outputs`) are
reduced inside a forward hook on the expensive schedule: a tensor output (or the first tensor of
a tuple, or ``.last_hidden_state``) of shape (B, T, D) is mean-pooled over T first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import torch

from . import stats
from .base import Observation, Probe
from .contrastive import BATCH_STEPS

if TYPE_CHECKING:
    from .session import ProbeSession


def _first_tensor(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    if isinstance(output, (tuple, list)):
        for o in output:
            if isinstance(o, torch.Tensor):
                return o
    return None


CHEAP_METRICS = ("nonfinite_rows", "n", "dim", "norm_mean", "cosine_mean", "dim_std_mean", "column_norm_dev")
PAIR_METRICS = ("alignment", "negative_cosine")


def _dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of two (..., d) tensors, one 1-d `@` per row: the float rounding of `x @ y` on one
    step's vectors (a batched product sums in another order, and cosine_mean subtracts two numbers of order rows)."""
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return torch.stack([x @ y for x, y in zip(a, b)])


def _cheap_steps(e: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """The every-step readings of K steps at once: e (K, L, b, d) float, the L embeddings of every step; for each
    embedding `CHEAP_METRICS` (as `stats.collapse_metrics(x, expensive=False)` and column_norm_dev compute them on
    one (b, d) tensor: non-finite rows masked to zero), then for each pair (i, j) of embeddings `PAIR_METRICS`
    (`stats.alignment`, `stats.negative_cosine`); (K, 7 L + 2 P), in that order. The same numbers as the one-step
    computations, each op reducing in the same order."""
    k, n_emb, b, d = e.shape
    finite = torch.isfinite((e * 0).sum(-1))  # 0 * x is NaN exactly where x is not finite: rows without NaN / Inf
    count = finite.sum(-1)
    n = count.float()
    raw = torch.linalg.vector_norm(e, dim=-1)  # a masked row's norm is 0, the others' as they are
    u = e / raw.clamp_min(1e-12).unsqueeze(-1)  # rows L2-normalised (the pairs' readings keep every row)
    norms = torch.where(finite, raw, torch.zeros((), device=e.device))
    xn = torch.where(finite.unsqueeze(-1), u, torch.zeros((), device=e.device))
    s = xn.sum(-2)  # (K, L, d)
    cosine = (_dots(s, s).reshape(k, n_emb) - (norms > 0).sum(-1)) / (n * (n - 1))
    var = (xn.pow(2).sum(-2) - n.unsqueeze(-1) * (s / n.unsqueeze(-1)).pow(2)) / (n - 1).unsqueeze(-1)
    cols = [b - count, n, torch.full_like(n, float(d)), norms.sum(-1) / n, cosine, var.clamp_min(0).sqrt().mean(-1),
            (torch.linalg.vector_norm(e, dim=-2) - 1.0).abs().amax(-1)]
    out = torch.stack([c.float() for c in cols], -1).reshape(k, -1)  # (K, L * 7), embedding by embedding
    if not pairs:
        return out
    su = u.sum(-2)
    readings = []
    for i, j in pairs:
        ua, ub = u[:, i], u[:, j]  # (K, b, d) views
        readings += [(ua - ub).pow(2).sum(-1).mean(-1),
                     (_dots(su[:, i], su[:, j]) - (ua * ub).reshape(k, -1).sum(-1)) / (b * b - b)]
    return torch.cat([out, torch.stack(readings, -1)], 1)


class Collapse(Probe):
    name = "collapse"

    def __init__(self, outputs: Mapping[str, str] | None = None,
                 pairs: tuple[tuple[str, str], ...] = (("image", "text"),)) -> None:
        self.outputs = dict(outputs or {})
        self.pairs = pairs
        self._held: list[tuple[int, list[torch.Tensor]]] = []  # (step, its embeddings), of one signature
        self._signature: tuple | None = None  # the held steps' labels, shape, dtype, device

    def setup(self, session: "ProbeSession") -> None:
        self.watch(session, self.outputs)

    def close(self, session: "ProbeSession") -> None:
        self.drain(session)

    def drain(self, session: "ProbeSession") -> None:
        """The held steps' readings, computed now (their values wait for the next flush like any other)."""
        held, self._held = self._held, []
        if not held:
            return
        labels = self._signature[0]
        pairs = [(labels.index(a), labels.index(b)) for a, b in self.pairs if a in labels and b in labels]
        with torch.no_grad():
            e = torch.stack([x for _, xs in held for x in xs]).float()
            values = _cheap_steps(e.reshape(len(held), len(labels), *e.shape[1:]), pairs)
        targets = [t for t in labels for _ in CHEAP_METRICS] + [f"{labels[i]}~{labels[j]}" for i, j in pairs
                                                                 for _ in PAIR_METRICS]
        metrics = list(CHEAP_METRICS) * len(labels) + list(PAIR_METRICS) * len(pairs)
        session.buffer.later_steps([step for step, _ in held], self.name, values, targets, metrics)

    def _hold(self, session: "ProbeSession", obs: Observation) -> bool:
        """Hold a cheap step whose embeddings are 2-d float tensors of one shape with >= 2 rows (False: not
        such a step); the held steps are computed together once there are `BATCH_STEPS` of them."""
        xs = list(obs.embeddings.values())
        x0 = xs[0]
        if not (isinstance(x0, torch.Tensor) and x0.dim() == 2 and x0.shape[0] > 1 and x0.is_floating_point()):
            return False
        if not all(isinstance(x, torch.Tensor) and x.shape == x0.shape and x.dtype == x0.dtype
                   and x.device == x0.device for x in xs[1:]):
            return False
        signature = (tuple(obs.embeddings), x0.shape, x0.dtype, x0.device)
        if self._held and signature != self._signature:
            self.drain(session)
        self._signature = signature
        self._held.append((obs.step, [x.detach() for x in xs]))
        if len(self._held) >= BATCH_STEPS:
            self.drain(session)
        return True

    def watch(self, session: "ProbeSession", outputs: Mapping[str, str]) -> None:
        modules = dict(session.model.named_modules())
        missing = [path for path in outputs.values() if path not in modules]
        if missing:
            raise KeyError(f"modules not found in model: {missing}")
        for label, path in outputs.items():
            session.hooks.forward_hook(modules[path], self._output_hook(session, label))

    def coverage(self, session: "ProbeSession", records) -> dict:
        """Watched outputs that never produced a record (module never called with grad on a
        measured step, or its output not a floating (B, D) / (B, T, D) tensor)."""
        seen = set(records.loc[records["probe"] == self.name, "target"].unique()) if len(records) else set()
        return {"watched_outputs": sorted(self.outputs),
                "watched_outputs_never_fired": sorted(k for k in self.outputs if k not in seen)}

    def _output_hook(self, session: "ProbeSession", label: str):
        def hook(module, args, output):
            if not session.hook_due(expensive=True):
                return
            x = _first_tensor(output)
            if x is None or x.dim() < 2 or not x.is_floating_point():
                return
            with session.guard(self.name), torch.no_grad():
                x = x.detach()
                if x.dim() == 3:
                    x = x.float().mean(1)  # (B, T, D) -> (B, D)
                for metric, v in stats.collapse_metrics(x, expensive=True).items():
                    session.buffer.defer(self.name, label, metric, v)

        return hook

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        if not obs.embeddings or not session.due(obs.step):
            return
        expensive = session.due(obs.step, expensive=True)
        if not expensive and self._hold(session, obs):  # the usual step: computed with the next held steps'
            return
        self.drain(session)  # steps held so far first, so each step's rows come in step order
        keys: list[tuple[str, str]] = []
        vals: list[torch.Tensor] = []
        with torch.no_grad():
            for label, x in obs.embeddings.items():
                if x.dim() == 3:
                    x = x.detach().float().mean(1)
                for metric, v in stats.collapse_metrics(x, expensive=expensive).items():
                    keys.append((label, metric))
                    vals.append(v)
                if x.dim() == 2 and x.shape[0] > 1:
                    # F.normalize(x, dim=0) leaves every column (feature) at unit norm across the batch
                    keys.append((label, "column_norm_dev"))
                    vals.append((torch.linalg.vector_norm(x.detach().float(), dim=0) - 1.0).abs().max())
            for a, b in self.pairs:
                xa, xb = obs.embeddings.get(a), obs.embeddings.get(b)
                if xa is None or xb is None or xa.shape[0] != xb.shape[0] or xa.shape[-1] != xb.shape[-1]:
                    continue
                xa, xb = xa.detach().reshape(xa.shape[0], -1), xb.detach().reshape(xb.shape[0], -1)
                keys += [(f"{a}~{b}", "alignment"), (f"{a}~{b}", "negative_cosine")]
                vals += [stats.alignment(xa, xb), stats.negative_cosine(xa, xb)]
        session.buffer.extend_values(obs.step, self.name, keys, vals)
