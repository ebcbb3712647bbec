"""Latent stats: learned latent / query parameters and the normalisation that consumes them.

Probe ``latent_stats``, target = the parameter's qualified name, metrics (values at `observe`
time, i.e. before that step's update):
  mean, std            — per-latent mean / std over the feature axis, averaged over latents
  norm_mean, norm_min, norm_max — per-latent L2 norms
  rms                  — root mean square of all entries
  between_latent_std   — std across latents, averaged over features (≈0: all latents alike)
  drift                — ‖θ − θ₀‖ / ‖θ₀‖, θ₀ = value when the session opened
  expensive: cosine_mean (mean off-diagonal pairwise cosine), identical_rows (latents that
  duplicate an earlier one exactly), and, when a LayerNorm/RMSNorm receives the latents verbatim
  (first batch element equal to the parameter), post_norm_rms and norm_gain = post/pre rms, plus a
  row target ``<latent>-><norm module>`` metric ``consumed_by_norm`` = 1.
Every LayerNorm/RMSNorm also gets input_rms / output_rms (target = module name) on the expensive
schedule, so a report can say "latent rms 0.02 → normalised to 1.0" even without an exact match.
Batched over steps: on cheap steps each latent's value is copied (one op) and the every-step metrics above are
computed for `BATCH_STEPS` steps at once on the stacked copies (`contrastive.BATCH_STEPS`): the same values, each
stamped with its own step, for an eighth of the per-step tensor ops; they reach the records up to BATCH_STEPS - 1
steps late (`records` and `close` compute the held steps first). An expensive step computes its own at once.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from . import stats
from .base import Observation, Probe, module_label
from .contrastive import BATCH_STEPS

if TYPE_CHECKING:
    from .session import ProbeSession

LATENT_PATTERN = r"(^|\.)(latents?|queries|query_tokens|learned_queries|query_embeds?|latent_queries)$"

_NORMS: tuple[type, ...] = (nn.LayerNorm,) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _as_rows(p: torch.Tensor) -> torch.Tensor:
    """(…, L, D) or (D,) parameter → (L', D) float32 rows."""
    x = p.detach().float()
    return x.reshape(1, -1) if x.dim() < 2 else x.reshape(-1, x.shape[-1])


STEP_METRICS = ("mean", "std", "norm_mean", "norm_min", "norm_max", "rms", "nonfinite", "drift")


def _step_metrics(x: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    """`STEP_METRICS` and, with more than one row, between_latent_std of K copies of one latent at once: x (K, L, D)
    float rows as `_as_rows` gives them, init (L, D) its rows when the session opened; (K, 8 or 9), as
    `LatentStats.observe` computes them on one copy."""
    norms = x.norm(dim=-1)
    cols = [x.mean(-1).mean(-1), x.std(-1, correction=0).mean(-1), norms.mean(-1), norms.amin(-1), norms.amax(-1),
            x.pow(2).mean((-2, -1)).sqrt(), (~torch.isfinite(x)).sum((-2, -1)).float(),
            (x - init).norm(dim=(-2, -1)) / init.norm().clamp_min(1e-30)]
    if x.shape[1] > 1:
        cols.append(x.std(-2).mean(-1))
    return torch.stack(cols, 1)


def _rms(x: torch.Tensor) -> torch.Tensor:
    # one fused pass, no temporary the size of the activation
    return torch.linalg.vector_norm(x.detach(), dtype=torch.float32) / math.sqrt(max(x.numel(), 1))


class LatentStats(Probe):
    name = "latent_stats"

    def __init__(self, latents: Sequence[str] | None = None, pattern: str = LATENT_PATTERN) -> None:
        self.explicit = list(latents) if latents else None
        self.pattern = re.compile(pattern)

    def setup(self, session: "ProbeSession") -> None:
        params = dict(session.model.named_parameters())
        if self.explicit is not None:
            missing = [n for n in self.explicit if n not in params]
            if missing:
                raise KeyError(f"latent parameters not found in model: {missing}")
            names = self.explicit
        else:
            names = [n for n in params if self.pattern.search(n)]
        self.latents = {n: params[n] for n in names}
        self.init = {n: p.detach().clone() for n, p in self.latents.items()}
        self._held: list[tuple[int, list[torch.Tensor]]] = []  # (step, a copy of each latent's rows then)
        self.consumer: dict[str, str] = {}  # latent name -> norm module that receives it verbatim
        for mname, mod in session.model.named_modules():
            if isinstance(mod, _NORMS):
                session.hooks.forward_hook(mod, self._norm_hook(session, module_label(mname)))

    def _norm_hook(self, session: "ProbeSession", mname: str):
        def hook(module, args, output):
            if not (args and isinstance(args[0], torch.Tensor) and session.hook_due(expensive=True)):
                return
            with session.guard(self.name), torch.no_grad():
                x = args[0]
                in_rms, out_rms = _rms(x), _rms(output)
                session.buffer.defer(self.name, mname, "input_rms", in_rms)
                session.buffer.defer(self.name, mname, "output_rms", out_rms)
                for lname, p in self.latents.items():
                    if self.consumer.get(lname, mname) != mname or p.dim() < 2 or x.dim() < 2:
                        continue
                    L, D = p.shape[-2], p.shape[-1]
                    if x.shape[-1] != D or x.shape[-2] != L:
                        continue
                    first = x.reshape(-1, L, D)[0]
                    if first.shape == p.reshape(-1, L, D)[0].shape and torch.equal(first, p.reshape(-1, L, D)[0]):
                        self.consumer[lname] = mname
                        session.buffer.defer(self.name, lname, "post_norm_rms", out_rms)
                        session.buffer.defer(self.name, lname, "norm_gain", out_rms / in_rms.clamp_min(1e-30))
                        session.buffer.defer(self.name, f"{lname}->{mname}", "consumed_by_norm", 1.0)

        return hook

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        if not self.latents or not session.due(obs.step):
            return
        expensive = session.due(obs.step, expensive=True)
        if not expensive:  # the usual step: its values copied, computed with the next held steps' (module docstring)
            with torch.no_grad():
                self._held.append((obs.step, [_as_rows(p).clone() for p in self.latents.values()]))
            if len(self._held) >= BATCH_STEPS:
                self.drain(session)
            return
        self.drain(session)  # steps held so far first, so each step's rows come in step order
        keys: list[tuple[str, str]] = []
        vals: list[torch.Tensor] = []
        with torch.no_grad():
            for name, p in self.latents.items():
                x = _as_rows(p)
                norms = x.norm(dim=1)
                d0 = self.init[name].float()
                m = {
                    "mean": x.mean(1).mean(),
                    "std": x.std(1, correction=0).mean(),
                    "norm_mean": norms.mean(),
                    "norm_min": norms.min(),
                    "norm_max": norms.max(),
                    "rms": x.pow(2).mean().sqrt(),
                    "nonfinite": (~torch.isfinite(x)).sum(),
                    "drift": (p.detach().float() - d0).norm() / d0.norm().clamp_min(1e-30),
                }
                if x.shape[0] > 1:
                    m["between_latent_std"] = x.std(0).mean()
                    if expensive:
                        m["cosine_mean"] = stats.mean_offdiag_cosine(x)
                        m["identical_rows"] = torch.tensor(float(x.shape[0] - torch.unique(x, dim=0).shape[0]))
                for metric, v in m.items():
                    keys.append((name, metric))
                    vals.append(v)
        session.buffer.extend_values(obs.step, self.name, keys, vals)

    def drain(self, session: "ProbeSession") -> None:
        """The held steps' readings, computed now (their values wait for the next flush like any other)."""
        held, self._held = getattr(self, "_held", []), []
        if not held:
            return
        steps = [step for step, _ in held]
        for i, name in enumerate(self.latents):
            with torch.no_grad():
                x = torch.stack([copies[i] for _, copies in held])
                values = _step_metrics(x, _as_rows(self.init[name]))
            metrics = list(STEP_METRICS) + ["between_latent_std"] * (values.shape[1] > len(STEP_METRICS))
            session.buffer.later_steps(steps, self.name, values, [name] * len(metrics), metrics)

    def close(self, session: "ProbeSession") -> None:
        self.drain(session)
        self.init = {}
