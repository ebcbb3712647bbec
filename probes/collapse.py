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
Watched outputs (``outputs={"name": "module.path"}`` or `ProbeSession.watch_outputs`) are
reduced inside a forward hook on the expensive schedule: a tensor output (or the first tensor of
a tuple, or ``.last_hidden_state``) of shape (B, T, D) is mean-pooled over T first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import torch

from . import stats
from .base import Observation, Probe

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


class Collapse(Probe):
    name = "collapse"

    def __init__(self, outputs: Mapping[str, str] | None = None,
                 pairs: tuple[tuple[str, str], ...] = (("image", "text"),)) -> None:
        self.outputs = dict(outputs or {})
        self.pairs = pairs

    def setup(self, session: "ProbeSession") -> None:
        self.watch(session, self.outputs)

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
